"""Transparent huge pages (issue 13): settings, the PMD fault path, splits, fork and COW,
the deferred split shrinker. Expected values come from the kernel's rules (mm/huge_memory.c
of 6.18) and from what this machine's kernel showed for the same steps (see
tests/differential/test_thp.py, which runs them against it)."""

from __future__ import annotations

import pytest

import vmsim
from vmsim.constants import (
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MADV_NOHUGEPAGE,
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
)
from vmsim.hw.pagetable import PMD_LEVEL, PTE_LEVEL
from vmsim.mm.huge_memory import DEFAULT_THP, ThpSettings, deferred_split_scan, thp_settings

M2 = 2 << 20
P = 4096
RW = PROT_READ | PROT_WRITE
PFN = (1 << 55) - 1
KPF_THP = 1 << 22
KPF_HEAD = 1 << 15
KPF_TAIL = 1 << 16
KPF_ZERO = 1 << 24


def _vmstat(m: vmsim.Machine) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in m.vmstat().splitlines())}


def _smaps(p: vmsim.Process, addr: int) -> dict[str, int]:
    out: dict[str, int] = {}
    on = False
    for line in p.smaps().splitlines():
        first = line.split(" ", 1)[0]
        if "-" in first and ":" not in first:
            on = int(first.split("-")[0], 16) == addr
            continue
        if on and line.endswith(" kB"):
            k, v = line.split(":", 1)
            out[k] = int(v.split()[0])
        elif on and line.startswith("THPeligible:"):
            out["THPeligible"] = int(line.split()[1])
    return out


def _huge(m: vmsim.Machine, length: int = 2 * M2) -> tuple[vmsim.Process, int]:
    p = m.spawn()
    a = p.mmap(0, length, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    p.madvise(a, length, MADV_HUGEPAGE)
    return p, a


# --- settings ----------------------------------------------------------------------------
def test_default_settings_are_the_reference_machines() -> None:
    d = vmsim.Machine().memory.thp.settings
    assert d == DEFAULT_THP
    assert (d.enabled, d.defrag, d.use_zero_page, d.shmem_enabled) == (
        "madvise",
        "madvise",
        True,
        "never",
    )
    assert (d.max_ptes_none, d.max_ptes_swap, d.max_ptes_shared) == (511, 64, 256)
    assert (d.pages_to_scan, d.scan_sleep_millisecs) == (4096, 10000)
    assert d.mthp_mode(2048) == "inherit" and d.mthp_mode(64) == "never"


def test_settings_from_options() -> None:
    assert thp_settings("always").enabled == "always"
    s = thp_settings({"enabled": "never", "max_ptes_none": 0, "mthp": {2048: "always"}})
    assert s.enabled == "never" and s.max_ptes_none == 0 and s.pmd_mode() == "always"
    with pytest.raises(ValueError, match=r"max_ptes_none must be an integer within 0\.\.511"):
        thp_settings({"max_ptes_none": 512})
    with pytest.raises(ValueError, match="unknown thp setting"):
        thp_settings({"enabeld": "always"})
    with pytest.raises(ValueError, match="defrag must be one of"):
        ThpSettings(defrag="sometimes")
    with pytest.raises(ValueError, match="no size 8"):
        thp_settings({"mthp": {8: "always"}})
    with pytest.raises(ValueError, match="thp must be always, madvise or never"):
        vmsim.Machine(thp="maybe")


# --- the fault path ----------------------------------------------------------------------
def test_write_fault_in_a_madvised_vma_maps_a_pmd_thp() -> None:
    m = vmsim.Machine()
    p, a = _huge(m)
    assert a % M2 == 0  # thp_get_unmapped_area(): a 2 MiB multiple is placed aligned
    p.write(a + 5 * P, b"x")
    leaf = p.mm.pt.get(a)
    assert leaf is not None and leaf.level == PMD_LEVEL
    e = p.pagemap(a, 512)
    head = e[0] & PFN
    assert head % 512 == 0 and [x & PFN for x in e] == list(range(head, head + 512))
    assert all(x >> 56 == 0x81 for x in e)  # present, exclusive
    st = _smaps(p, a)
    assert (st["Rss"], st["AnonHugePages"], st["Private_Dirty"], st["THPeligible"]) == (
        2048,
        2048,
        2048,
        1,
    )
    assert _vmstat(m)["thp_fault_alloc"] == 1
    assert m.kpageflags(head) & (KPF_THP | KPF_HEAD) == KPF_THP | KPF_HEAD
    assert m.kpageflags(head + 1) & (KPF_THP | KPF_TAIL) == KPF_THP | KPF_TAIL
    assert "AnonHugePages:      2048 kB" in m.meminfo()
    assert _vmstat(m)["nr_anon_transparent_hugepages"] == 1
    assert p.read(a + 5 * P, 1) == b"x" and p.read(a + 6 * P, 1) == b"\0"
    m.check_memory()
    m.check_tlb()


def test_read_fault_maps_the_huge_zero_page_then_a_write_replaces_it() -> None:
    m = vmsim.Machine()
    p, a = _huge(m)
    assert p.read(a + 100, 4) == bytes(4)
    e = p.pagemap(a, 2)
    assert e[0] >> 56 == 0xA0  # present, file (the huge zero page is not anonymous)
    assert m.kpageflags(e[0] & PFN) == KPF_THP | KPF_ZERO | KPF_HEAD
    assert m.kpageflags(e[1] & PFN) == KPF_THP | KPF_ZERO | KPF_TAIL
    assert _smaps(p, a)["Rss"] == 0
    assert p.mm.tree.lookup(a).anon_vma is not None  # vmf_anon_prepare() on a read fault
    p.write(a, b"w")  # do_huge_zero_wp_pmd(): a THP in its place
    assert _smaps(p, a)["AnonHugePages"] == 2048
    v = _vmstat(m)
    assert (v["thp_zero_page_alloc"], v["thp_fault_alloc"], v["thp_split_pmd"]) == (1, 1, 0)
    m.check_memory()


def test_no_thp_without_madvise_or_with_nohugepage() -> None:
    m = vmsim.Machine()
    p = m.spawn()
    a = p.mmap(0, 2 * M2, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    p.write(a, b"x")
    assert p.mm.pt.get(a).level == PTE_LEVEL
    p.madvise(a + M2, M2, MADV_NOHUGEPAGE)
    p.write(a + M2, b"x")
    assert p.mm.pt.get(a + M2).level == PTE_LEVEL
    assert _smaps(p, a + M2)["THPeligible"] == 0
    m2 = vmsim.Machine(thp="always")
    q = m2.spawn()
    b = q.mmap(0, 2 * M2, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    q.write(b, b"x")
    assert q.mm.pt.get(b).level == PMD_LEVEL


def test_a_vma_smaller_than_the_aligned_2mib_gets_small_pages() -> None:
    m = vmsim.Machine()
    p, a = _huge(m, M2 + 8 * P)
    # [a, a + 2M + 32K) mapped where the 2 MiB multiple rule does not apply: only an
    # aligned 2 MiB wholly inside the VMA can be a THP
    aligned = (a + M2 - 1) & -M2
    for addr in range(a, a + M2 + 8 * P, 64 * P):
        p.write(addr, b"x")
    levels = {p.mm.pt.get(x).level for x in range(a, a + M2 + 8 * P, 64 * P)}
    inside = aligned + M2 <= a + M2 + 8 * P
    assert levels == ({PMD_LEVEL, PTE_LEVEL} if inside else {PTE_LEVEL})


def test_no_order9_block_falls_back_to_4k_pages() -> None:
    # 768 pages: the zero page sits in the only aligned 512-page block, and 512..767 is too
    # short to be one: there is no free block of order 9
    m = vmsim.Machine(ram="3M")
    p, a = _huge(m, M2)
    p.write(a, b"x")
    assert p.mm.pt.get(a).level == PTE_LEVEL
    assert _vmstat(m)["thp_fault_fallback"] == 1
    m.check_memory()


# --- splits -------------------------------------------------------------------------------
def test_partial_dontneed_splits_the_pmd_and_the_memory_stays_used() -> None:
    m = vmsim.Machine()
    p, a = _huge(m)
    p.write(a, b"x")
    free = m.memory.frames.free_pages
    p.madvise(a + 3 * P, 2 * P, MADV_DONTNEED)
    st = _smaps(p, a)
    assert (st["Rss"], st["AnonHugePages"]) == (2040, 0)
    v = _vmstat(m)
    assert (v["thp_split_pmd"], v["thp_deferred_split_page"]) == (1, 1)
    # the two pages are unmapped but still in the THP: nothing was freed (the deposited
    # page table became the PTE table)
    assert m.memory.frames.free_pages == free
    e = p.pagemap(a, 6)
    head = e[0] & PFN
    assert e[3] == 0 and e[4] == 0 and e[5] & PFN == head + 5
    assert m.kpageflags(head + 3) & KPF_TAIL  # still a tail page of the large folio
    m.check_memory()
    # memory pressure: the deferred split shrinker splits it and frees the two pages
    assert deferred_split_scan(m.memory) == 1
    assert _vmstat(m)["thp_split_page"] == 1
    assert m.memory.frames.free_pages == free + 2
    assert not m.kpageflags(head + 5) & (KPF_THP | KPF_TAIL)
    m.check_memory()


def test_partial_munmap_and_mprotect_split_but_whole_ones_do_not() -> None:
    m = vmsim.Machine()
    p, a = _huge(m)
    p.write(a, b"x")
    p.write(a + M2, b"y")
    p.mprotect(a + M2, M2, PROT_READ)  # a whole PMD: change_huge_pmd()
    assert p.mm.pt.get(a + M2).level == PMD_LEVEL
    p.mprotect(a + M2, M2, RW)
    p.write(a + M2 + P, b"z")  # the THP is ours alone: written without a copy
    assert p.mm.pt.get(a + M2).level == PMD_LEVEL
    p.munmap(a + 10 * P, P)
    assert p.mm.pt.get(a).level == PTE_LEVEL
    assert _vmstat(m)["thp_split_pmd"] == 1
    p.mprotect(a + M2 + 7 * P, P, PROT_READ)
    assert _vmstat(m)["thp_split_pmd"] == 2
    p.munmap(a + M2, M2)
    assert p.mm.pt.get(a + M2) is None
    m.check_memory()
    p.exit()
    m.check_memory()
    assert m.memory.thp.deposit.get(p.mm.serial, {}) == {}


# --- fork and copy-on-write --------------------------------------------------------------
def test_fork_shares_the_thp_and_a_write_splits_then_copies_one_page() -> None:
    m = vmsim.Machine()
    p, a = _huge(m)
    p.write(a, b"p")
    c = p.fork()
    assert c.mm.pt.get(a).level == PMD_LEVEL
    assert m.page_refcount(p.pagemap(a, 1)[0] & PFN) == 2
    c.write(a + P, b"c")  # do_huge_pmd_wp_page(): shared, so split and copy one page
    assert c.mm.pt.get(a).level == PTE_LEVEL and p.mm.pt.get(a).level == PMD_LEVEL
    pe, ce = p.pagemap(a, 2), c.pagemap(a, 2)
    assert pe[0] & PFN == ce[0] & PFN and pe[1] & PFN != ce[1] & PFN
    assert p.read(a + P, 1) == b"\0" and c.read(a + P, 1) == b"c"
    assert pe[1] >> 56 == 0x80  # the head page is mapped twice: not exclusive
    st = _smaps(c, a)
    assert (st["Rss"], st["AnonHugePages"]) == (2048, 0)
    assert _smaps(p, a)["AnonHugePages"] == 2048
    m.check_memory()
    c.exit()
    p.write(a + 2 * P, b"q")  # alone again: the PMD is reused, made writable
    assert p.mm.pt.get(a).level == PMD_LEVEL
    m.check_memory()
