"""The hardware walk: translations, fault error codes, A/D updates, walk caches.

Error codes are written by hand from the SDM's definition (bit 0 P: protection violation,
1 W/R: write, 2 U/S: user mode, 3 RSVD, 4 I/D: instruction fetch, 5 PK); e.g. a user write to
a read-only page is P|W|U = 0x7, a user read of a not-present page U = 0x4, a user fetch from
an NX page P|U|I = 0x15.
"""

from __future__ import annotations

import pytest

from vmsim.hw.mmu import (
    INIT_PKRU,
    NonCanonicalAddress,
    PageFault,
    PagingStructureCache,
    PfError,
    StalePagingStructure,
    walk,
)
from vmsim.hw.pagetable import PageTables, WalkStep
from vmsim.hw.pte import PAGE_ACCESSED, PAGE_DIRTY, PAGE_NX, PAGE_RW, PAGE_USER, make_pte

VA = 0x7FFF_FFFF_E000  # indices 255, 511, 511, 510


def pte(
    pfn: int,
    *,
    writable: bool = True,
    user: bool = True,
    nx: bool = False,
    accessed: bool = False,
    dirty: bool = False,
    pkey: int = 0,
    huge: bool = False,
) -> int:
    return make_pte(
        pfn,
        present=True,
        writable=writable,
        user=user,
        nx=nx,
        accessed=accessed,
        dirty=dirty,
        global_=False,
        pkey=pkey,
        huge=huge,
    )


def fault(pt: PageTables, va: int, access: str, **kw: object) -> tuple[int, int]:
    with pytest.raises(PageFault) as exc:
        walk(pt, va, access, **kw)  # type: ignore[arg-type]
    assert exc.value.addr == va
    return int(exc.value.error_code), exc.value.level


def upper_key(pt: PageTables, va: int, level: int) -> int:
    return (va & pt.va_mask) >> pt.shifts[level]


# --- translations -------------------------------------------------------------------------


def test_4k_translation() -> None:
    pt = PageTables()
    pt.set(VA, pte(0x12345))
    t = walk(pt, VA + 0x123, "read")
    assert t.paddr == 0x1234_5123
    assert (t.page_size, t.level, t.memory_refs, t.pwc_hit) == (4096, 1, 4, False)
    assert [(s.level, s.idx) for s in t.entries] == [(4, 255), (3, 511), (2, 511), (1, 510)]


def test_2m_translation_uses_the_offset_bits_below_21() -> None:
    pt = PageTables()
    pt.set(0x20_0000, pte(0x400, huge=True), level=2)  # frame 0x400000
    t = walk(pt, 0x2A_BCDE, "read")
    assert t.paddr == 0x4A_BCDE
    assert (t.page_size, t.level, t.memory_refs) == (2 << 20, 2, 3)


def test_1g_translation() -> None:
    pt = PageTables()
    pt.set(0x4000_0000, pte(0xC0000, huge=True), level=3)  # frame 0xC000_0000
    t = walk(pt, 0x7FFF_FFFF, "write")
    assert t.paddr == 0xFFFF_FFFF
    assert (t.page_size, t.level, t.memory_refs) == (1 << 30, 3, 2)


def test_5_level_walk_above_2_pow_47() -> None:
    pt = PageTables(levels=5)
    va = 0x00AB_CDEF_0123_4000
    pt.set(va, pte(0x77))
    t = walk(pt, va + 5, "read")
    assert t.paddr == 0x77005
    assert t.memory_refs == 5
    # 0x00AB_CDEF_0123_4000: bits 56..48 = 0xAB, 47..39 = 0x19B, 38..30 = 0x1BC,
    # 29..21 = 0x009, 20..12 = 0x034
    assert [s.idx for s in t.entries] == [0xAB, 0x19B, 0x1BC, 0x009, 0x034]
    with pytest.raises(NonCanonicalAddress):
        walk(PageTables(levels=4), va, "read")


def test_non_canonical_address_is_not_a_page_fault() -> None:
    pt = PageTables()
    with pytest.raises(NonCanonicalAddress):
        walk(pt, 0x0000_8000_0000_0000, "read")
    with pytest.raises(ValueError):
        walk(pt, 0x1000, "fetch")  # type: ignore[arg-type]


# --- faults -------------------------------------------------------------------------------


def test_not_present_read_is_error_code_4_at_the_missing_level() -> None:
    pt = PageTables()
    assert fault(pt, VA, "read") == (0x4, 4)  # nothing at all: the PGD entry is none
    pt.set(VA + 0x1000, pte(1))
    assert fault(pt, VA, "read") == (0x4, 1)  # the PTE table exists, the PTE does not
    assert fault(pt, VA, "write") == (0x6, 1)  # W|U
    assert fault(pt, VA, "exec") == (0x14, 1)  # I|U
    assert fault(pt, VA, "read", user=False) == (0x0, 1)


def test_user_write_to_read_only_is_0x7() -> None:
    pt = PageTables()
    pt.set(VA, pte(1, writable=False))
    assert fault(pt, VA, "write") == (0x7, 1)
    walk(pt, VA, "read")


def test_user_fetch_from_nx_is_0x15() -> None:
    pt = PageTables()
    pt.set(VA, pte(1, nx=True))
    assert fault(pt, VA, "exec") == (0x15, 1)
    walk(pt, VA, "read")
    walk(pt, VA, "write")


def test_user_access_to_supervisor_page_is_0x5() -> None:
    pt = PageTables()
    pt.set(VA, pte(1, user=False))
    assert fault(pt, VA, "read") == (0x5, 1)
    assert fault(pt, VA, "write") == (0x7, 1)
    assert fault(pt, VA, "exec") == (0x15, 1)
    walk(pt, VA, "read", user=False)


def test_rights_combine_over_all_levels() -> None:
    pt = PageTables()
    pt.set(VA, pte(1))
    ents = pt.entries
    # U/S cleared in the PMD entry only: the page becomes supervisor-only.
    k = upper_key(pt, VA, 2)
    ents[2][k] &= ~PAGE_USER
    assert fault(pt, VA, "read") == (0x5, 1)
    ents[2][k] |= PAGE_USER
    # R/W cleared in the PUD entry only: read-only for everyone (CR0.WP=1).
    k = upper_key(pt, VA, 3)
    ents[3][k] &= ~PAGE_RW
    assert fault(pt, VA, "write") == (0x7, 1)
    assert fault(pt, VA, "write", user=False) == (0x3, 1)
    walk(pt, VA, "write", user=False, wp=False)  # CR0.WP=0: supervisor writes go through
    ents[3][k] |= PAGE_RW
    # XD set in the PGD entry only: nothing below is executable.
    k = upper_key(pt, VA, 4)
    ents[4][k] |= PAGE_NX
    assert fault(pt, VA, "exec") == (0x15, 1)
    ents[4][k] &= ~PAGE_NX
    walk(pt, VA, "exec")


def test_smep_and_smap() -> None:
    pt = PageTables()
    pt.set(VA, pte(1))
    assert fault(pt, VA, "exec", user=False) == (0x11, 1)  # SMEP: P|I
    walk(pt, VA, "exec", user=False, cr4_smep=False)
    walk(pt, VA, "read", user=False)
    assert fault(pt, VA, "read", user=False, smap=True) == (0x1, 1)
    assert fault(pt, VA, "write", user=False, smap=True) == (0x3, 1)


def test_protection_keys() -> None:
    pt = PageTables()
    pt.set(VA, pte(1, pkey=1))
    pt.set(VA + 0x1000, pte(2, pkey=0))
    # Linux's default PKRU: access disabled for keys 1..15
    assert fault(pt, VA, "read", pkru=INIT_PKRU) == (0x25, 1)  # P|U|PK
    assert fault(pt, VA, "write", pkru=INIT_PKRU) == (0x27, 1)  # P|W|U|PK
    walk(pt, VA, "exec", pkru=INIT_PKRU)  # keys do not govern instruction fetches
    walk(pt, VA + 0x1000, "write", pkru=INIT_PKRU)
    # write-disable only for key 1 (PKRU bit 3)
    walk(pt, VA, "read", pkru=0b1000)
    assert fault(pt, VA, "write", pkru=0b1000) == (0x27, 1)
    # PK is reported along with an ordinary write-protection failure
    pt.set(VA, pte(1, pkey=1, writable=False))
    assert fault(pt, VA, "write", pkru=0b1000) == (0x27, 1)
    assert fault(pt, VA, "write") == (0x7, 1)


def test_reserved_bits() -> None:
    pt = PageTables()
    # bit 13 of a 2 MiB leaf lies below its frame: reserved. RSVD|P|U = 0xD
    pt.set(0x20_0000, pte(0x400, huge=True) | 1 << 13, level=2)
    assert fault(pt, 0x20_0000, "read") == (0xD, 2)
    # bit 12 is PAT there, not reserved
    pt.set(0x40_0000, pte(0x400, huge=True) | 1 << 12, level=2)
    walk(pt, 0x40_0000, "read")
    # physical bits at and above MAXPHYADDR
    pt.set(VA, pte(1 << 34))  # frame at 64 TiB needs 47 physical bits
    walk(pt, VA, "read")
    assert fault(pt, VA, "write", maxphyaddr=46) == (0xF, 1)  # RSVD|U|W|P
    # PS in a PML4 entry
    pt.entries[4][upper_key(pt, VA, 4)] |= 0x80
    assert fault(pt, VA, "read") == (0xD, 4)


# --- accessed and dirty bits ---------------------------------------------------------------


def test_read_sets_accessed_and_write_sets_dirty_in_place() -> None:
    pt = PageTables()
    pt.set(VA, pte(1))
    assert pt.get(VA).entry & (PAGE_ACCESSED | PAGE_DIRTY) == 0  # type: ignore[union-attr]
    t = walk(pt, VA, "read")
    e = pt.get(VA).entry  # type: ignore[union-attr]
    assert e & PAGE_ACCESSED and not e & PAGE_DIRTY
    assert t.entries[-1] == WalkStep(1, 510, e)
    walk(pt, VA, "write")
    assert pt.get(VA).entry & PAGE_DIRTY  # type: ignore[union-attr]


def test_accessed_is_set_at_every_upper_level() -> None:
    pt = PageTables()
    pt.set(VA, pte(1))
    for lv in (4, 3, 2):
        pt.entries[lv][upper_key(pt, VA, lv)] &= ~PAGE_ACCESSED
    walk(pt, VA, "read")
    for lv in (4, 3, 2):
        assert pt.entries[lv][upper_key(pt, VA, lv)] & PAGE_ACCESSED


def test_a_faulting_access_leaves_the_leaf_untouched() -> None:
    pt = PageTables()
    pt.set(VA, pte(1, writable=False))
    before = pt.get(VA).entry  # type: ignore[union-attr]
    fault(pt, VA, "write")
    assert pt.get(VA).entry == before  # type: ignore[union-attr]
    # but the upper entries used on the way were still marked accessed
    pt.entries[2][upper_key(pt, VA, 2)] &= ~PAGE_ACCESSED
    fault(pt, VA, "write")
    assert pt.entries[2][upper_key(pt, VA, 2)] & PAGE_ACCESSED


def test_dirty_on_a_2m_leaf() -> None:
    pt = PageTables()
    pt.set(0x20_0000, pte(0x400, huge=True), level=2)
    walk(pt, 0x21_0000, "write")
    e = pt.get(0x20_0000).entry  # type: ignore[union-attr]
    assert e & PAGE_DIRTY and e & PAGE_ACCESSED and e & 0x80


# --- paging-structure caches -------------------------------------------------------------


def test_pde_cache_hit_reads_only_the_pte() -> None:
    pt = PageTables()
    pt.set(VA, pte(1))
    pt.set(VA + 0x1000, pte(2))
    pwc = PagingStructureCache()
    t = walk(pt, VA, "read", pwc=pwc)
    assert (t.memory_refs, t.pwc_hit) == (4, False)
    t = walk(pt, VA + 0x1000, "read", pwc=pwc)
    assert (t.memory_refs, t.pwc_hit, t.paddr) == (1, True, 0x2000)
    assert [s.level for s in t.entries] == [1]
    assert (pwc.hits, pwc.misses) == (1, 1)


def test_pdpte_and_pml4e_cache_hits() -> None:
    pt = PageTables()
    pt.set(0x1000, pte(1))
    pt.set(0x20_0000, pte(2))  # same PUD entry, another PMD entry
    pt.set(0x4000_0000, pte(3))  # same PGD entry, another PUD entry
    pwc = PagingStructureCache({2: 1, 3: 1, 4: 1})
    assert walk(pt, 0x1000, "read", pwc=pwc).memory_refs == 4
    assert walk(pt, 0x20_0000, "read", pwc=pwc).memory_refs == 2  # PDPTE hit
    assert walk(pt, 0x4000_0000, "read", pwc=pwc).memory_refs == 3  # PML4E hit
    assert walk(pt, 0x4000_0000, "read", pwc=pwc).memory_refs == 1  # PDE hit


def test_pde_cache_is_lru() -> None:
    pt = PageTables()
    for va in (0x0, 0x20_0000, 0x40_0000):
        pt.set(va, pte(1))
    pwc = PagingStructureCache({2: 2, 3: 0, 4: 0})
    for va in (0x0, 0x20_0000, 0x0, 0x40_0000):  # 0x200000 is the least recent at the end
        walk(pt, va, "read", pwc=pwc)
    assert walk(pt, 0x0, "read", pwc=pwc).memory_refs == 1
    assert walk(pt, 0x20_0000, "read", pwc=pwc).memory_refs == 4


def test_cached_rights_apply_on_a_hit() -> None:
    pt = PageTables()
    pt.set(VA, pte(1))
    pt.set(VA + 0x1000, pte(2))
    pwc = PagingStructureCache()
    pt.entries[2][upper_key(pt, VA, 2)] &= ~PAGE_RW  # read-only PMD entry
    walk(pt, VA, "read", pwc=pwc)
    with pytest.raises(PageFault) as exc:
        walk(pt, VA + 0x1000, "write", pwc=pwc)
    assert int(exc.value.error_code) == 0x7
    assert pwc.hits == 1


def test_invlpg_and_flush_empty_the_caches() -> None:
    pt = PageTables()
    pt.set(VA, pte(1))
    pwc = PagingStructureCache()
    walk(pt, VA, "read", pwc=pwc)
    assert len(pwc) == 3  # PML4E, PDPTE, PDE
    pwc.invalidate(0x1234_5000)  # another address: still everything goes (SDM 4.10.4.1)
    assert len(pwc) == 0
    assert walk(pt, VA, "read", pwc=pwc).memory_refs == 4
    pwc.flush()
    assert len(pwc) == 0


def test_stale_cache_entry_is_caught() -> None:
    frames = iter(range(100, 200))
    pt = PageTables(alloc_table=lambda: next(frames), free_table=lambda pfn: None)
    pt.set(VA, pte(1))
    pwc = PagingStructureCache()
    walk(pt, VA, "read", pwc=pwc)
    pt.clear(VA)  # frees the PTE, PMD and PUD tables
    pt.set(VA, pte(2))  # new tables in new frames
    with pytest.raises(StalePagingStructure):
        walk(pt, VA, "read", pwc=pwc)
    pwc.invalidate(VA)  # what the kernel's flush does
    assert walk(pt, VA, "read", pwc=pwc).paddr == 0x2000


def test_cache_sizes_are_checked() -> None:
    with pytest.raises(ValueError):
        PagingStructureCache({1: 4})
    with pytest.raises(ValueError):
        PagingStructureCache({2: -1})
    assert PfError.PK == 0x20
