"""TLBs: set indexing, LRU per set, PCID tags, global entries, invalidation, the kernel's flush
policy, and a random comparison with the plain-Python twin (vmsim.hw.tlb_reference).

Expected set indexes and eviction orders are worked out by hand in the comments, from the
geometry (SDM-style indexing: set = page number mod number of sets).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from vmsim.hw.tlb import (
    DEFAULT_TLB_CONFIG,
    PAGE_SIZE_1G,
    PAGE_SIZE_2M,
    PAGE_SIZE_4K,
    TLB_FLUSH_ALL,
    TlbArrayConfig,
    TlbConfig,
    TlbEntry,
    TlbHierarchy,
    flush_tlb_range,
)
from vmsim.hw.tlb_reference import ReferenceTlb, reference_flush_tlb_range

K4, M2, G1 = PAGE_SIZE_4K, PAGE_SIZE_2M, PAGE_SIZE_1G

# A tiny geometry where collisions are easy to arrange:
#   L1 dTLB: 4K: 2 sets x 2 ways; 2M: 1 set x 2 ways.   L1 iTLB: 4K: 1 set x 2 ways.
#   STLB: 4K+2M unified: 4 sets x 2 ways; 1G: 1 set x 1 way.
TINY = TlbConfig(
    l1d=(TlbArrayConfig(4, 2, (K4,)), TlbArrayConfig(2, 2, (M2,))),
    l1i=(TlbArrayConfig(2, 2, (K4,)),),
    stlb=(TlbArrayConfig(8, 2, (K4, M2)), TlbArrayConfig(1, 1, (G1,))),
)


def where(tlb: TlbHierarchy, vaddr: int) -> list[tuple[str, int, int]]:
    """(structure, array index, set index) of every entry covering vaddr."""
    out = []
    for name, arrays in tlb.contents().items():
        for ai, sets in enumerate(arrays):
            for si, entries in enumerate(sets):
                for e in entries:
                    if e.vbase <= vaddr < e.vbase + e.page_size:
                        out.append((name, ai, si))
    return out


def vpns(entries: list[TlbEntry]) -> list[int]:
    return [e.vbase // K4 for e in entries]


# --- geometry ---------------------------------------------------------------------------------


def test_default_geometry_is_skylake_shaped():
    c = DEFAULT_TLB_CONFIG
    assert [(a.entries, a.ways, a.sets) for a in c.l1d] == [(64, 4, 16), (32, 4, 8), (4, 4, 1)]
    assert [(a.entries, a.ways, a.sets) for a in c.l1i] == [(128, 8, 16), (8, 8, 1)]
    assert [(a.entries, a.ways, a.sets) for a in c.stlb] == [(1536, 12, 128), (16, 4, 4)]
    assert c.stlb[0].page_sizes == (K4, M2)


@pytest.mark.parametrize(
    "bad",
    [
        lambda: TlbArrayConfig(10, 4, (K4,)),  # 10 entries do not split into 4 ways
        lambda: TlbArrayConfig(12, 4, (K4,)),  # 3 sets: not a power of two
        lambda: TlbArrayConfig(8, 4, (8192,)),  # no 8 KiB pages on x86-64
        lambda: TlbConfig(l1d=(TlbArrayConfig(4, 4, (K4,)), TlbArrayConfig(4, 4, (K4,)))),
    ],
)
def test_bad_geometry_is_refused(bad):
    with pytest.raises(ValueError):
        bad()


def test_set_index_4k_by_hand():
    # 0x7fff_1234_5678: 4 KiB page number 0x7fff12345.
    #   L1 dTLB 4K, 16 sets: 0x7fff12345 & 0xf  = 0x5  -> set 5
    #   STLB, 128 sets:      0x7fff12345 & 0x7f = 0x45 -> set 69
    t = TlbHierarchy()
    t.insert(0x7FFF_1234_5678, K4, pfn=0x1234, perms=0, pcid=1)
    assert sorted(where(t, 0x7FFF_1234_5678)) == [("l1d", 0, 5), ("stlb", 0, 69)]
    e = t.contents()["l1d"][0][5][0]
    assert e == TlbEntry(0x7FFF_1234_5000, K4, 0x1234, 0, 1, False)


def test_set_index_2m_by_hand():
    # 0x7fff_1234_5678 >> 21 = 0x3fff891.
    #   L1 dTLB 2M, 8 sets: 0x3fff891 & 7    = 1    -> set 1
    #   STLB (shared), 128 sets: 0x3fff891 & 0x7f = 0x11 -> set 17
    t = TlbHierarchy()
    t.insert(0x7FFF_1234_5678, M2, pfn=0x200, perms=0, pcid=1)
    assert sorted(where(t, 0x7FFF_1234_5678)) == [("l1d", 1, 1), ("stlb", 0, 17)]
    assert t.contents()["l1d"][1][1][0].vbase == 0x7FFF_1220_0000


def test_set_index_1g_and_itlb_by_hand():
    # 1 GiB page number of 0x1_c000_0000 is 7: L1 dTLB 1G has 1 set (set 0), STLB 1G 4 sets:
    # 7 & 3 = 3. An instruction fill of 4 KiB page 0x12345 goes to L1 iTLB set 0x5 (16 sets).
    t = TlbHierarchy()
    t.insert(0x1_C000_0000, G1, pfn=0x40000, perms=0, pcid=0)
    assert sorted(where(t, 0x1_C000_0000)) == [("l1d", 2, 0), ("stlb", 1, 3)]
    t.insert(0x1234_5000, K4, pfn=1, perms=0, pcid=0, kind="instr")
    assert sorted(where(t, 0x1234_5000)) == [("l1i", 0, 5), ("stlb", 0, 0x45)]


def test_1g_instruction_pages_are_cached_in_the_stlb_only():
    t = TlbHierarchy()  # the L1 iTLB has no 1 GiB array
    t.insert(0x4000_0000, G1, pfn=0x40000, perms=0, pcid=0, kind="instr")
    assert where(t, 0x4000_0000) == [("stlb", 1, 1)]
    e, level = t.lookup(0x4000_1234, 0, "instr")
    assert level == "STLB" and e is not None and e.pfn == 0x40000
    assert where(t, 0x4000_0000) == [("stlb", 1, 1)]


# --- hits, misses, refill ---------------------------------------------------------------------


def test_lookup_miss_then_hit_and_counters():
    t = TlbHierarchy()
    assert t.lookup(0x1000, 1) == (None, None)
    e = t.insert(0x1234, K4, pfn=77, perms=0b110, pcid=1)
    assert t.lookup(0x1FFF, 1) == (e, "L1")
    assert t.lookup(0x1000, 1, "instr") == (e, "STLB")  # iTLB missed, STLB held the data fill
    assert t.lookup(0x1000, 1, "instr") == (e, "L1")  # ...and refilled the iTLB
    s = t.stats
    assert (s.dtlb_hits, s.dtlb_misses, s.itlb_hits, s.itlb_misses) == (1, 1, 1, 1)
    assert (s.stlb_hits, s.stlb_misses) == (1, 1)


def test_2m_entry_covers_every_address_of_its_page():
    t = TlbHierarchy()
    e = t.insert(0x4030_1234, M2, pfn=0x600, perms=0, pcid=3)
    assert e.vbase == 0x4020_0000
    for a in (0x4020_0000, 0x4030_1234, 0x403F_FFFF):
        assert t.lookup(a, 3) == (e, "L1")
    assert t.lookup(0x4040_0000, 3) == (None, None)
    assert t.lookup(0x401F_FFFF, 3) == (None, None)


def test_stlb_hit_refills_l1_after_l1_eviction():
    t = TlbHierarchy(TINY)
    # L1 dTLB 4K set 0 holds vpns 0, 2 (2 ways); vpn 4 evicts vpn 0 from L1 only.
    # STLB sets: vpn 0 -> 0, 2 -> 2, 4 -> 0: STLB set 0 holds 0 and 4, so vpn 0 survives there.
    for vpn in (0, 2, 4):
        t.insert(vpn * K4, K4, pfn=vpn, perms=0, pcid=0)
    assert vpns(t.contents()["l1d"][0][0]) == [2, 4]
    e, level = t.lookup(0, 0)
    assert level == "STLB" and e is not None and e.pfn == 0
    assert vpns(t.contents()["l1d"][0][0]) == [4, 0]  # the refill evicted LRU vpn 2


# --- LRU per set ------------------------------------------------------------------------------


def test_lru_eviction_order_in_a_tiny_set():
    t = TlbHierarchy(TINY)
    # L1 dTLB 4K, set 0 (even vpns), 2 ways. Columns: LRU first.
    t.insert(0 * K4, K4, 0, 0, 0)  # [0]
    t.insert(2 * K4, K4, 2, 0, 0)  # [0, 2]
    assert t.lookup(0, 0)[1] == "L1"  # [2, 0]
    t.insert(4 * K4, K4, 4, 0, 0)  # [0, 4]: 2 was least recently used
    assert vpns(t.contents()["l1d"][0][0]) == [0, 4]
    t.insert(0 * K4, K4, 100, 0, 0)  # refill of a present page: refresh, no eviction
    assert vpns(t.contents()["l1d"][0][0]) == [4, 0]
    assert t.contents()["l1d"][0][0][1].pfn == 100
    t.insert(6 * K4, K4, 6, 0, 0)  # [0, 6]
    assert vpns(t.contents()["l1d"][0][0]) == [0, 6]
    # Odd vpns live in set 1 and never disturb set 0.
    t.insert(1 * K4, K4, 1, 0, 0)
    assert vpns(t.contents()["l1d"][0][1]) == [1]
    assert vpns(t.contents()["l1d"][0][0]) == [0, 6]


def test_unified_stlb_set_is_shared_by_4k_and_2m_pages():
    t = TlbHierarchy(TINY)
    # STLB unified, 4 sets x 2 ways: 4K vpn 0 -> set 0; 2M page 0x800000 (2M number 4) -> set 0.
    t.insert(0, K4, 0, 0, 0)
    t.insert(0x80_0000, M2, 0x800, 0, 0)
    t.insert(0x400_0000, M2, 0x4000, 0, 0)  # 2M number 32 -> set 0: evicts the LRU (4K vpn 0)
    stlb0 = t.contents()["stlb"][0][0]
    assert [(e.vbase, e.page_size) for e in stlb0] == [(0x80_0000, M2), (0x400_0000, M2)]


# --- PCIDs and global entries -----------------------------------------------------------------


def test_pcid_isolation():
    t = TlbHierarchy()
    a = t.insert(0x5000, K4, pfn=10, perms=0, pcid=1)
    b = t.insert(0x5000, K4, pfn=20, perms=0, pcid=2)
    assert t.lookup(0x5000, 1) == (a, "L1")
    assert t.lookup(0x5000, 2) == (b, "L1")
    assert t.lookup(0x5000, 3) == (None, None)
    t.flush_pcid(1)
    assert t.lookup(0x5000, 1) == (None, None)
    assert t.lookup(0x5000, 2) == (b, "L1")


def test_global_entry_matches_any_pcid_and_survives_pcid_flushes():
    t = TlbHierarchy()
    g = t.insert(0xFFFF_FFFF_8100_0000, K4, pfn=0x1000, perms=0, pcid=0, global_=True)
    for pcid in (0, 1, 4095):
        assert t.lookup(0xFFFF_FFFF_8100_0000, pcid) == (g, "L1")
    t.flush_pcid(0)
    flush_tlb_range(t, 0, TLB_FLUSH_ALL, 0)
    t.flush_all(include_global=False)
    assert t.lookup(0xFFFF_FFFF_8100_0000, 9) == (g, "L1")
    t.flush_all(include_global=True)
    assert t.lookup(0xFFFF_FFFF_8100_0000, 9) == (None, None)
    assert len(t) == 0


def test_pcid_entry_is_preferred_to_a_global_one_for_the_same_page():
    t = TlbHierarchy()
    g = t.insert(0x9000, K4, pfn=1, perms=0, pcid=0, global_=True)
    own = t.insert(0x9000, K4, pfn=2, perms=0, pcid=5)
    assert t.lookup(0x9000, 5) == (own, "L1")
    assert t.lookup(0x9000, 6) == (g, "L1")


def test_pcid_out_of_range_is_refused():
    t = TlbHierarchy()
    for bad in (-1, 4096):
        with pytest.raises(ValueError):
            t.lookup(0, bad)
        with pytest.raises(ValueError):
            t.insert(0, K4, 0, 0, bad)
        with pytest.raises(ValueError):
            t.invlpg(0, bad)
    with pytest.raises(ValueError):
        t.lookup(0, 0, "code")  # type: ignore[arg-type]


# --- invalidation -----------------------------------------------------------------------------


def test_invlpg_drops_only_that_page():
    t = TlbHierarchy()
    for i in range(4):
        t.insert(0x10_0000 + i * K4, K4, pfn=i, perms=0, pcid=1)
    t.insert(0x10_1000, K4, pfn=99, perms=0, pcid=2)  # same page, other PCID
    t.invlpg(0x10_1ABC, 1)
    assert where(t, 0x10_1000) == [("l1d", 0, 1), ("stlb", 0, 1)]  # only PCID 2's copy left
    assert t.lookup(0x10_1000, 1) == (None, None)
    assert t.lookup(0x10_1000, 2)[0].pfn == 99  # type: ignore[union-attr]
    for i in (0, 2, 3):
        assert t.lookup(0x10_0000 + i * K4, 1)[1] == "L1"
    assert t.stats.invlpg == 1


def test_invlpg_drops_global_entries_and_huge_pages_holding_the_address():
    t = TlbHierarchy()
    t.insert(0x4000_0000, G1, pfn=0x40000, perms=0, pcid=1)
    t.insert(0x20_0000, M2, pfn=0x200, perms=0, pcid=1)
    t.insert(0x20_0000, K4, pfn=0x999, perms=0, pcid=3, global_=True)
    # INVLPG 0x2fffff as PCID 7: no PCID-7 entry; the global 4K entry is for page 0x200000,
    # not 0x2ff000; the 2M entry is PCID 1's. Nothing goes.
    t.invlpg(0x2F_FFFF, 7)
    assert t.lookup(0x20_0000, 1)[0].pfn == 0x999  # type: ignore[union-attr]
    t.invlpg(0x20_0123, 7)  # the global 4K page at 0x200000, whatever the PCID
    assert t.lookup(0x20_0000, 7) == (None, None)
    assert t.lookup(0x20_0000, 1)[0].page_size == M2  # type: ignore[union-attr]
    t.invlpg(0x2F_FFFF, 1)  # inside the 2M page: drops it
    assert t.lookup(0x20_0000, 1) == (None, None)
    t.invlpg(0x7FFF_FFFF, 1)  # last byte of the 1G page
    assert t.lookup(0x4000_0000, 1) == (None, None)
    assert len(t) == 0


def test_no_stale_entry_after_any_invalidation():
    """Fill every structure (L1 only, STLB only, both), invalidate, look up: always a miss."""
    invalidations = [
        lambda t, a: t.invlpg(a, 1),
        lambda t, a: t.flush_pcid(1),
        lambda t, a: t.flush_all(),
        lambda t, a: flush_tlb_range(t, a & -K4, (a & -K4) + K4, 1),
        lambda t, a: flush_tlb_range(t, 0, 64 * K4, 1),
    ]
    for inval in invalidations:
        t = TlbHierarchy(TINY)
        # L1 dTLB 4K: set = vpn & 1; STLB: set = vpn & 3 (TINY geometry, 2 ways everywhere).
        # vpn 1 in the L1 only: fill it, then two instruction fills in STLB set 1 evict it there.
        t.insert(1 * K4, K4, 1, 0, 1)
        t.insert(5 * K4, K4, 5, 0, 1, kind="instr")
        t.insert(9 * K4, K4, 9, 0, 1, kind="instr")
        # vpn 0 in the STLB only: fill it, then vpns 2 and 6 (L1 set 0, STLB set 2) evict it
        # from the L1. vpn 6 is then in both.
        for vpn in (0, 2, 6):
            t.insert(vpn * K4, K4, vpn, 0, 1)
        l1_only, stlb_only, both = 1, 0, 6
        assert where(t, l1_only * K4) == [("l1d", 0, 1)]
        assert where(t, stlb_only * K4) == [("stlb", 0, 0)]
        assert sorted(where(t, both * K4)) == [("l1d", 0, 0), ("stlb", 0, 2)]
        for vpn in (stlb_only, l1_only, both):
            inval(t, vpn * K4 + 0x123)
            for kind in ("data", "instr"):
                assert t.lookup(vpn * K4, 1, kind) == (None, None)  # type: ignore[arg-type]
            assert where(t, vpn * K4) == []


# --- the kernel's flush policy ----------------------------------------------------------------


def fill(t: TlbHierarchy, first_vpn: int, n: int, pcid: int) -> None:
    for vpn in range(first_vpn, first_vpn + n):
        t.insert(vpn * K4, K4, vpn, 0, pcid)


def test_flush_of_33_pages_is_33_invlpgs():
    t = TlbHierarchy()
    fill(t, 0x100, 40, pcid=1)
    assert flush_tlb_range(t, 0x101 * K4, 0x122 * K4, pcid=1) == 33
    s = t.stats
    assert (s.invlpg, s.flush_pcid, s.nr_tlb_local_flush_one, s.nr_tlb_local_flush_all) == (
        33,
        0,
        33,
        0,
    )
    for vpn in range(0x100, 0x100 + 40):
        hit = t.lookup(vpn * K4, 1)[1] is not None
        assert hit == (not 0x101 <= vpn < 0x122), hex(vpn)


def test_flush_of_34_pages_is_a_full_flush_of_the_pcid():
    t = TlbHierarchy()
    fill(t, 0x100, 40, pcid=1)
    fill(t, 0x100, 4, pcid=2)
    g = t.insert(0xFFFF_8000_0000_0000, K4, 5, 0, 1, global_=True)
    assert flush_tlb_range(t, 0x101 * K4, 0x123 * K4, pcid=1) == TLB_FLUSH_ALL
    s = t.stats
    assert (s.invlpg, s.flush_pcid, s.nr_tlb_local_flush_one, s.nr_tlb_local_flush_all) == (
        0,
        1,
        0,
        1,
    )
    assert all(t.lookup(vpn * K4, 1) == (None, None) for vpn in range(0x100, 0x128))
    assert all(t.lookup(vpn * K4, 2)[1] == "L1" for vpn in range(0x100, 0x104))
    assert t.lookup(0xFFFF_8000_0000_0000, 1) == (g, "L1")


def test_flush_stride_2m_counts_huge_pages():
    t = TlbHierarchy()
    for i in range(40):
        t.insert(0x4000_0000 + i * M2, M2, i * 512, 0, 1)
    # 33 huge pages: 33 INVLPGs, one per 2 MiB.
    assert flush_tlb_range(t, 0x4000_0000, 0x4000_0000 + 33 * M2, 1, stride=M2) == 33
    assert t.stats.invlpg == 33
    # The same 66 MiB at 4 KiB stride is 16896 pages: a full flush.
    assert flush_tlb_range(t, 0x4000_0000, 0x4000_0000 + 33 * M2, 1) == TLB_FLUSH_ALL


def test_flush_ceiling_is_tunable_and_flush_all_sentinel():
    t = TlbHierarchy()
    assert flush_tlb_range(t, 0, 2 * K4, 0, ceiling=1) == TLB_FLUSH_ALL
    assert flush_tlb_range(t, 0, 0, 0) == 0
    assert flush_tlb_range(t, 0, TLB_FLUSH_ALL, 0) == TLB_FLUSH_ALL
    with pytest.raises(ValueError):
        flush_tlb_range(t, 0, K4, 0, stride=3000)


# --- stale entries never outlive a page-table change ------------------------------------------


class PageTableWithTlb(RuleBasedStateMachine):
    """A toy page table (vpn -> (pfn, writable)) behind a TLB, changed only the way the kernel
    does: a new mapping needs no flush; a change or removal is followed by flush_tlb_range().
    Invariant: a TLB hit always agrees with the page table, and a hit on an unmapped page
    never happens."""

    config = TINY

    def __init__(self) -> None:
        super().__init__()
        self.tlb = TlbHierarchy(self.config)
        self.pt: dict[tuple[int, int], tuple[int, int]] = {}  # (pcid, vpn) -> (pfn, perms)
        self.next_pfn = 1

    vpn = st.integers(0, 40)
    pcid = st.integers(0, 2)

    @rule(pcid=pcid, vpn=vpn, kind=st.sampled_from(["data", "instr"]))
    def access(self, pcid: int, vpn: int, kind: str) -> None:
        e, _level = self.tlb.lookup(vpn * K4 + 7, pcid, kind)  # type: ignore[arg-type]
        pte = self.pt.get((pcid, vpn))
        if e is not None:
            assert pte is not None, f"stale hit on unmapped vpn {vpn} pcid {pcid}"
            assert (e.pfn, e.perms) == pte, f"stale translation for vpn {vpn}"
        elif pte is not None:  # the walk: fill from the page table
            self.tlb.insert(vpn * K4, K4, pte[0], pte[1], pcid, kind=kind)  # type: ignore[arg-type]

    @rule(pcid=pcid, vpn=vpn, writable=st.integers(0, 1))
    def map_page(self, pcid: int, vpn: int, writable: int) -> None:
        old = self.pt.get((pcid, vpn))
        self.pt[(pcid, vpn)] = (self.next_pfn, writable)
        self.next_pfn += 1
        if old is not None:  # a changed PTE must be flushed (e.g. COW break)
            flush_tlb_range(self.tlb, vpn * K4, (vpn + 1) * K4, pcid)

    @rule(pcid=pcid, first=vpn, n=st.integers(1, 40))
    def unmap_range(self, pcid: int, first: int, n: int) -> None:
        for vpn in range(first, first + n):
            self.pt.pop((pcid, vpn), None)
        flush_tlb_range(self.tlb, first * K4, (first + n) * K4, pcid)

    @rule(pcid=pcid, first=vpn, n=st.integers(1, 40))
    def mprotect_readonly(self, pcid: int, first: int, n: int) -> None:
        for vpn in range(first, first + n):
            if (pcid, vpn) in self.pt:
                self.pt[(pcid, vpn)] = (self.pt[(pcid, vpn)][0], 0)
        flush_tlb_range(self.tlb, first * K4, (first + n) * K4, pcid)

    @invariant()
    def structure_is_sound(self) -> None:
        self.tlb.check()


PageTableWithTlb.TestCase.settings = settings(
    max_examples=200, stateful_step_count=60, deadline=None
)
TestPageTableWithTlb = PageTableWithTlb.TestCase


class PageTableWithDefaultTlb(PageTableWithTlb):
    config = DEFAULT_TLB_CONFIG


PageTableWithDefaultTlb.TestCase.settings = settings(
    max_examples=50, stateful_step_count=60, deadline=None
)
TestPageTableWithDefaultTlb = PageTableWithDefaultTlb.TestCase


# --- the fast model against the plain twin ----------------------------------------------------

# Addresses that collide: a few regions, offsets up to 16 MiB, so 4K, 2M and 1G pages overlap
# and share sets.
REGIONS = [0, 0x4000_0000, 0x7FFF_FF00_0000, 0xFFFF_FFFF_8000_0000]
addresses = st.builds(
    lambda base, off: base + off, st.sampled_from(REGIONS), st.integers(0, (16 << 20) - 1)
)
pcids = st.sampled_from([0, 1, 2, 4095])
kinds = st.sampled_from(["data", "instr"])
sizes = st.sampled_from([K4, K4, K4, M2, M2, G1])


class TwinMachine(RuleBasedStateMachine):
    """Every operation on the fast TLB and on the reference; every result, counter and set
    (in LRU order) must agree."""

    config = TINY

    def __init__(self) -> None:
        super().__init__()
        self.fast = TlbHierarchy(self.config)
        self.ref = ReferenceTlb(self.config)

    @rule(vaddr=addresses, pcid=pcids, kind=kinds)
    def lookup(self, vaddr: int, pcid: int, kind: str) -> None:
        a = self.fast.lookup(vaddr, pcid, kind)  # type: ignore[arg-type]
        b = self.ref.lookup(vaddr, pcid, kind)  # type: ignore[arg-type]
        assert a == b

    @rule(
        vaddr=addresses,
        size=sizes,
        pfn=st.integers(0, 1 << 20),
        perms=st.integers(0, 7),
        pcid=pcids,
        global_=st.booleans(),
        kind=kinds,
    )
    def insert(
        self, vaddr: int, size: int, pfn: int, perms: int, pcid: int, global_: bool, kind: str
    ) -> None:
        a = self.fast.insert(vaddr, size, pfn, perms, pcid, global_, kind)  # type: ignore[arg-type]
        b = self.ref.insert(vaddr, size, pfn, perms, pcid, global_, kind)  # type: ignore[arg-type]
        assert a == b

    @rule(vaddr=addresses, pcid=pcids)
    def invlpg(self, vaddr: int, pcid: int) -> None:
        self.fast.invlpg(vaddr, pcid)
        self.ref.invlpg(vaddr, pcid)

    @rule(pcid=pcids)
    def flush_pcid(self, pcid: int) -> None:
        self.fast.flush_pcid(pcid)
        self.ref.flush_pcid(pcid)

    @rule(include_global=st.booleans())
    def flush_all(self, include_global: bool) -> None:
        self.fast.flush_all(include_global)
        self.ref.flush_all(include_global)

    @rule(
        start=addresses,
        npages=st.integers(0, 40),
        pcid=pcids,
        stride=st.sampled_from([K4, M2]),
    )
    def flush_range(self, start: int, npages: int, pcid: int, stride: int) -> None:
        start &= -stride
        end = start + npages * stride
        a = flush_tlb_range(self.fast, start, end, pcid, stride)
        b = reference_flush_tlb_range(self.ref, start, end, pcid, stride)
        assert a == b

    @invariant()
    def same_state(self) -> None:
        assert self.fast.contents() == self.ref.contents()
        assert self.fast.stats == self.ref.stats
        self.fast.check()


TwinMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestTwinTiny = TwinMachine.TestCase


class TwinMachineDefault(TwinMachine):
    config = DEFAULT_TLB_CONFIG


TwinMachineDefault.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestTwinDefault = TwinMachineDefault.TestCase
