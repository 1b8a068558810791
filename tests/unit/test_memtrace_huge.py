"""The huge-page what-ifs of the access-trace engine go through the model's own fault path
(issue 12 item 5): ``thp`` is THP enabled=always (vmsim.mm.huge_memory), ``2M``/``1G`` are
MAP_HUGETLB mappings from a pool (vmsim.mm.hugetlb). Both engines agree on every one."""

from __future__ import annotations

import numpy as np
import pytest
from memtrace_helpers import SKYLAKE, anon, both, chunk, diff, page_tables

from vmsim.constants import PROT_READ, PROT_WRITE
from vmsim.hw.pagetable import PMD_LEVEL, PUD_LEVEL
from vmsim.hw.pte import PAGE_PSE, PAGE_RW
from vmsim.memtrace.huge import HugeRegion, plan
from vmsim.memtrace.layout import Layout, Region
from vmsim.memtrace.records import KIND_LOAD, KIND_STORE
from vmsim.mm.flags import VM_HUGETLB
from vmsim.snapshot import parse

B = 0x40000000  # 1 GiB aligned
MIB = 1 << 20


def _vmstat(proc: object, name: str) -> int:
    for line in proc.machine.vmstat().splitlines():  # type: ignore[attr-defined]
        k, v = line.split()
        if k == name:
            return int(v)
    raise AssertionError(name)


def test_thp_read_maps_the_huge_zero_page_then_a_write_a_new_thp() -> None:
    # read of an empty aligned 2 MiB block: do_huge_pmd_anonymous_page() maps the huge zero
    # page (read-only PMD); a write: do_huge_pmd_wp_page() replaces it by a new THP
    trace = [chunk([B + 0x1000, B + 0x3000, B + 0x1000], [KIND_LOAD, KIND_LOAD, KIND_STORE])]
    f, r, fp, rp = both(trace, anon((B, B + 4 * MIB)), page_size="thp")
    assert diff(f, r) == {}
    assert page_tables(fp) == page_tables(rp)
    assert f.faults == 2 and f.by_page_size == {"2M": 3}
    for proc in (fp, rp):
        assert _vmstat(proc, "thp_zero_page_alloc") == 1
        assert _vmstat(proc, "thp_fault_alloc") == 1
    pmd = fp.mm.pt.entries[PMD_LEVEL][B >> 21]
    assert pmd & PAGE_PSE and pmd & PAGE_RW


def test_thp_falls_back_to_4k_where_no_aligned_block_fits() -> None:
    # 0x10A03000 + 2 MiB holds no aligned 2 MiB block: the 4 KiB path; the aligned one: THP
    base = 0x10A03000
    trace = [chunk([base, base + MIB, B + 5], KIND_STORE)]
    f, r, fp, rp = both(trace, anon((base, base + 2 * MIB), (B, B + 2 * MIB)), page_size="thp")
    assert diff(f, r) == {} and page_tables(fp) == page_tables(rp)
    assert f.by_page_size == {"4K": 2, "2M": 1}
    assert _vmstat(fp, "thp_fault_alloc") == 1


def test_a_pmd_split_by_the_model_mid_trace_reaches_the_fast_engine() -> None:
    # A read-only region: its read maps the huge zero page; a write there is outside what the
    # VMA allows, so the layout gives the page write permission (mprotect of 4 KiB), which
    # splits the PMD (__split_huge_pmd: 512 PTEs of the zero page) mid-trace; the write then
    # breaks COW on a 4 KiB page, and a later read is translated by a 4 KiB PTE.
    def layout() -> Layout:
        return Layout(regions=(Region(B, B + 4 * MIB, PROT_READ),))

    trace = [chunk([B + 8, B + 0x5000, B + 0x5000, B + 8], [1, 1, 2, 1])]
    f, r, fp, rp = both(trace, layout, page_size="thp")
    assert diff(f, r) == {}
    assert page_tables(fp) == page_tables(rp)
    assert f.by_page_size == {"2M": 2, "4K": 2}
    assert len(fp.mm.pt.entries[1]) == 512
    assert not fp.mm.pt.entries[PMD_LEVEL][B >> 21] & PAGE_PSE
    assert _vmstat(fp, "thp_split_pmd") == 1


@pytest.mark.parametrize(("page_size", "level"), [("2M", PMD_LEVEL), ("1G", PUD_LEVEL)])
def test_hugetlb_what_if_maps_pmd_or_pud_leaves_from_a_pool(page_size: str, level: int) -> None:
    rng = np.random.default_rng(7)
    addrs = B + rng.integers(0, 8 * MIB, 3000)
    kinds = rng.integers(1, 4, len(addrs))
    f, r, fp, rp = both([chunk(addrs, kinds)], anon((B, B + 8 * MIB)), page_size=page_size)
    assert diff(f, r) == {} and page_tables(fp) == page_tables(rp)
    assert f.by_page_size == {page_size: 3000}
    vma = fp.mm.tree.lookup(B)
    assert vma.flags & VM_HUGETLB
    leaves = [e for e in fp.mm.pt.entries[level].values() if e & PAGE_PSE]
    blocks = addrs >> (21 if page_size == "2M" else 30)
    touched = len(np.unique(blocks))
    # a private hugetlb page a read faulted in is mapped read-only (hugetlb_no_page()); a
    # later write faults once more and reuses it (hugetlb_wp())
    read_first = sum(
        1
        for b in np.unique(blocks)
        if kinds[blocks == b][0] == KIND_LOAD and (kinds[blocks == b] != KIND_LOAD).any()
    )
    assert len(leaves) == touched
    assert f.faults == touched + read_first
    stats = fp.machine.hugepage_stats(page_size)
    # the pool was sized to the mapping: 8 MiB -> 4 pages of 2 MiB, or one 1 GiB page
    assert stats["nr_hugepages"] == (4 if page_size == "2M" else 1)
    assert stats["free_hugepages"] == stats["nr_hugepages"] - touched


MAPS = """\
00108000-0010a000 r--p 00000000 fe:00 260958 /usr/bin/prog
0010a000-0010e000 r-xp 00002000 fe:00 260958 /usr/bin/prog
00111000-00112000 rw-p 00008000 fe:00 260958 /usr/bin/prog
00112000-00133000 rw-p 00000000 00:00 0 [heap]
04a1a000-04a2a000 rw-p 00000000 00:00 0
04a2a000-04a2b000 r--p 00000000 fe:00 339380 /usr/lib/libc.so.6
10000000-10500000 rw-p 00000000 00:00 0
10500000-10600000 ---p 00000000 00:00 0
20100000-20400000 rw-p 00000000 00:00 0
20400000-20401000 r--p 00000000 fe:00 339381 /usr/lib/libm.so.6
1ffeffe000-1fff001000 rw-p 00000000 00:00 0 [stack]
"""


def test_plan_rounds_anonymous_mappings_out_into_free_space_and_in_next_to_others() -> None:
    kept, huge = plan(parse(MAPS), 2 * MIB)
    rw = PROT_READ | PROT_WRITE
    assert huge == [
        # [heap] cannot round down (the program lies in the same 2 MiB block) and rounded
        # in it is empty; the 64 KiB anonymous region below libc likewise. 0x10000000: the
        # end rounds in, a PROT_NONE mapping follows; 0x20100000 rounds down into the free
        # space below it and ends aligned, where libm starts.
        HugeRegion(0x10000000, 0x10400000, rw),
        HugeRegion(0x20000000, 0x20400000, rw),
    ]
    spans = [(e.start, e.end, e.name) for e in kept]
    assert (0x10400000, 0x10500000, None) in spans  # the 4 KiB remainder
    assert (0x00112000, 0x00133000, "[heap]") in spans  # too small: unchanged
    assert (0x1FFEFFE000, 0x1FFF001000, "[stack]") in spans  # never converted
    assert (0x10500000, 0x10600000, None) in spans  # PROT_NONE: not converted
    assert not any(s < 0x20400000 and e > 0x20000000 for s, e, _ in spans)


def test_hugetlb_what_if_on_a_maps_snapshot_keeps_files_at_4k() -> None:
    text_page = 0x10A000
    addrs = [text_page + 0x10, 0x10000008, 0x10300010, 0x10400010, 0x20000010, 0x20100000]
    kinds = [0, KIND_STORE, KIND_LOAD, KIND_STORE, KIND_STORE, KIND_LOAD]

    def layout() -> Layout:
        return Layout.from_maps(MAPS)

    f, r, fp, rp = both([chunk(addrs, kinds)], layout, page_size="2M")
    assert diff(f, r) == {} and page_tables(fp) == page_tables(rp)
    # the program's text and the remainder above 0x10400000 are 4 KiB pages; the rest 2 MiB
    assert f.by_page_size == {"4K": 2, "2M": 4}
    assert fp.machine.hugepage_stats("2M")["nr_hugepages"] == 4
    assert fp.mm.tree.lookup(0x20000000).flags & VM_HUGETLB
    assert not fp.mm.tree.lookup(text_page).flags & VM_HUGETLB


def test_four_k_pass_never_maps_a_thp_even_where_the_snapshot_says_madvise() -> None:
    # smaps VmFlags "hg" (MADV_HUGEPAGE): the 4K pass still maps 4 KiB pages (THP never)
    smaps = "40000000-40400000 rw-p 00000000 00:00 0\nVmFlags: rd wr mr mw me ac hg\n"
    trace = [chunk([B, B + 2 * MIB], KIND_STORE)]
    f, r, _, _ = both(trace, lambda: Layout.from_maps(smaps), SKYLAKE, page_size="4K")
    assert diff(f, r) == {} and f.by_page_size == {"4K": 2}
    g, _, _, _ = both(trace, lambda: Layout.from_maps(smaps), SKYLAKE, page_size="thp")
    assert g.by_page_size == {"2M": 2}


def test_a_write_to_a_read_only_hugetlb_page_mprotects_the_whole_huge_page() -> None:
    # a read-only anonymous mapping, converted to hugetlb: a store there is given write
    # permission on its whole 2 MiB page (hugetlb mprotect works in huge pages), mid-trace
    maps = "40000000-40400000 r--p 00000000 00:00 0\n"
    layouts: list[Layout] = []

    def layout() -> Layout:
        layouts.append(Layout.from_maps(maps))
        return layouts[-1]

    trace = [chunk([B + 0x10, B + 0x10, B + 2 * MIB + 8], [KIND_LOAD, KIND_STORE, KIND_LOAD])]
    f, r, fp, rp = both(trace, layout, SKYLAKE, page_size="2M")
    assert diff(f, r) == {} and page_tables(fp) == page_tables(rp)
    assert f.by_page_size == {"2M": 3}
    assert [lay.added for lay in layouts] == [{(B, B + 2 * MIB)}] * 2
    assert fp.mm.tree.lookup(B).flags & VM_HUGETLB
    lines = fp.maps().splitlines()
    assert lines[0].startswith("40000000-40200000 rw-p") and "/anon_hugepage" in lines[0]
    assert lines[1].startswith("40200000-40400000 r--p")
