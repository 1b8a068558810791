"""The scenario engines (vmsim.scenarios), driven directly: no parser, no console.

Expected values come from Linux's rules, written here by hand, never read back from the code:
- COW (mm/memory.c): after fork() copy_present_pte() maps every private anonymous frame in
  both processes, read-only in both, refcount 2 and mapcount 2; the first write by either
  copies (wp_page_copy) while the other still maps the frame, and reuses it
  (wp_can_reuse_anon_folio) once it is the only holder. A MAP_SHARED page is never copied:
  its page-cache folio holds one reference for the cache plus one per mapping.
- ENOMEM (spec §1, §7): a middle split adds 2 VMAs, an edge split 1; at map_count ==
  max_map_count, munmap of a page strictly inside a VMA fails with ENOMEM and changes
  nothing; unmapping a whole VMA needs no split and succeeds; then the same munmap succeeds.
- Walk (Intel SDM ch. 4): one entry per level, each index 9 bits of the address, the frame
  from the leaf; a second identical access hits the TLB and reads no entry.
- Pressure: a workload bigger than RAM swaps; one RAM holds never does; every page reads back.
"""

from __future__ import annotations

import pytest

import vmsim
from vmsim.constants import MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE
from vmsim.procfs import PM_PFRAME_MASK
from vmsim.scenarios import ScenarioError, ScenarioParameterError, cow, enomem, walk
from vmsim.scenarios.maps_text import excerpt, new_lines, vma_at
from vmsim.scenarios.pressure import Settings, run_workload, totals

MB = 1 << 20

# --- COW ---------------------------------------------------------------------------------


def cow_steps(npages: int = 3) -> dict[str, cow.Step]:
    return {step.id: step for step in cow.story(npages)}


def private(step: cow.Step, label: str) -> cow.PageRow:
    return next(row for row in step.pages if row.label == label)


def test_cow_story_runs_its_steps_in_order_and_agrees_with_linux() -> None:
    steps = list(cow.story(3))
    assert [s.id for s in steps] == [
        "map",
        "parent-writes",
        "fork",
        "child-write-0",
        "parent-write-0",
        "parent-write-1",
        "shared-child-write",
        "shared-parent-write",
        "read-back",
        "counters",
    ]
    assert all(s.matches_linux for s in steps), [s.id for s in steps if not s.matches_linux]


def test_cow_no_frame_before_the_first_access() -> None:
    first = next(iter(cow.story(2)))
    assert first.id == "map"
    assert all(row.parent is None and row.child is None for row in first.pages)


def test_cow_frames_after_fork_are_shared_read_only_refcount_2() -> None:
    steps = cow_steps(4)
    before = steps["parent-writes"]
    assert before.faults == {"parent": ["anon"] * 4 + ["shared-write"]}
    for label in "0123":
        p = private(before, label).parent
        assert p is not None and (p.refcount, p.mapcount, p.writable) == (1, 1, True)
    fork = steps["fork"]
    pfns = set()
    for label in "0123":
        row = private(fork, label)
        assert row.parent is not None and row.child is not None
        assert row.parent.pfn == row.child.pfn == private(before, label).parent.pfn  # type: ignore[union-attr]
        assert (row.parent.refcount, row.parent.mapcount) == (2, 2)
        assert not row.parent.writable and not row.child.writable
        pfns.add(row.parent.pfn)
    assert len(pfns) == 4  # one frame per page
    # the shared mapping has no anon_vma: fork copies none of its PTEs
    shared = private(fork, "shared")
    assert shared.child is None
    assert shared.parent is not None and shared.parent.refcount == 2  # page cache + 1 map


def test_cow_writer_gets_the_copy_and_the_last_holder_reuses() -> None:
    steps = cow_steps(3)
    original0 = private(steps["fork"], "0").parent
    original1 = private(steps["fork"], "1").parent
    assert original0 is not None and original1 is not None

    child0 = steps["child-write-0"]
    assert child0.faults == {"child": ["cow"]}
    row = private(child0, "0")
    assert row.child is not None and row.parent is not None
    assert row.child.pfn != original0.pfn and row.child.writable
    assert (row.child.refcount, row.child.mapcount) == (1, 1)
    # the parent still maps the original, now alone, but its PTE stays read-only
    assert row.parent.pfn == original0.pfn
    assert (row.parent.refcount, row.parent.mapcount, row.parent.writable) == (1, 1, False)

    parent0 = steps["parent-write-0"]
    assert parent0.faults == {"parent": ["reuse"]}
    row = private(parent0, "0")
    assert row.parent is not None and row.parent.pfn == original0.pfn and row.parent.writable

    parent1 = steps["parent-write-1"]
    assert parent1.faults == {"parent": ["cow"]}
    row = private(parent1, "1")
    assert row.parent is not None and row.child is not None
    assert row.parent.pfn != original1.pfn and row.parent.writable
    assert row.child.pfn == original1.pfn and row.child.refcount == 1
    assert not row.child.writable  # until the child writes it (then a reuse)
    # page 2, written by nobody after the fork, is still one frame for both
    row = private(parent1, "2")
    assert row.parent is not None and row.child is not None
    assert row.parent.pfn == row.child.pfn and row.parent.refcount == 2


def test_cow_shared_page_is_one_frame_never_copied() -> None:
    steps = cow_steps(2)
    row = private(steps["shared-child-write"], "shared")
    assert steps["shared-child-write"].faults == {"child": ["shared-write"]}
    assert row.parent is not None and row.child is not None
    assert row.parent.pfn == row.child.pfn
    assert (row.child.refcount, row.child.mapcount) == (3, 2)  # page cache + 2 mappings
    assert steps["shared-parent-write"].faults == {"parent": []}  # PTE already writable


def test_cow_each_process_reads_its_own_writes() -> None:
    reads = cow_steps(3)["read-back"].reads
    assert reads["0"] == {"parent": "parent page 0, again", "child": "child page 0"}
    assert reads["1"] == {"parent": "parent page 1, again", "child": "parent page 1"}
    assert reads["2"] == {"parent": "parent page 2", "child": "parent page 2"}
    both = "child was here · parent was here too"
    assert reads["shared"] == {"parent": both, "child": both}


def test_cow_fault_counters() -> None:
    counters = cow_steps(3)["counters"].counters
    # parent: 3 first writes + the shared page's, then a reuse and a copy
    assert counters["parent"]["pgfault"] == 6
    assert counters["parent"]["anon_faults"] == 3
    assert (counters["parent"]["cow_faults"], counters["parent"]["cow_reuse"]) == (1, 1)
    assert counters["parent"]["file_faults"] == 1
    # child: one copy, one shared-page fault
    assert counters["child"]["pgfault"] == 2
    assert (counters["child"]["cow_faults"], counters["child"]["file_faults"]) == (1, 1)


def test_cow_needs_two_pages() -> None:
    with pytest.raises(ScenarioParameterError) as exc:
        list(cow.story(1))
    assert exc.value.parameter == "npages"


# --- ENOMEM ------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [300, 301])
def test_enomem_map_counts_and_errno_at_the_limit(limit: int) -> None:
    steps = {s.id: s for s in enomem.story(limit)}
    assert list(steps) == [
        "spawn",
        "mmap",
        "first-split",
        "split",
        "munmap-middle",
        "munmap-whole",
        "munmap-retry",
    ]
    spawn = steps["spawn"]
    # every line of /proc/pid/maps but [vsyscall] is a VMA in the process's tree
    assert spawn.map_count == len(spawn.maps) - 1
    start = spawn.map_count
    assert steps["mmap"].map_count == start + 1
    assert steps["first-split"].map_count == start + 3  # a middle split: +2
    split = steps["split"]
    assert split.map_count == limit
    facts = split.facts
    # +2 per middle split, +1 per edge split, from the mmap's count up to the limit
    assert 2 * facts["middle_splits"] + facts["edge_splits"] == limit - (start + 1)
    assert facts["edge_splits"] == (limit - (start + 1)) % 2
    assert facts["calls"] == facts["middle_splits"] + facts["edge_splits"]

    middle = steps["munmap-middle"]
    assert (middle.ok, middle.errno) == (False, "ENOMEM")
    assert middle.map_count == middle.map_count_before == limit
    whole = steps["munmap-whole"]
    assert (whole.ok, whole.map_count) == (True, limit - 1)
    retry = steps["munmap-retry"]
    assert (retry.ok, retry.errno, retry.map_count) == (True, None, limit)
    assert retry.call == middle.call
    assert all(s.matches_linux for s in steps.values())


def test_enomem_reports_progress_up_to_the_vmas_added() -> None:
    seen: list[int] = []
    steps = {s.id: s for s in enomem.story(enomem.PROGRESS_EVERY * 3, seen.append)}
    assert seen == sorted(seen) and len(seen) >= 2
    assert seen[-1] == steps["split"].map_count - steps["mmap"].map_count


def test_enomem_limit_without_room_is_a_parameter_error() -> None:
    steps = enomem.story(10)
    spawn = next(steps)  # the fresh process is shown first
    assert spawn.map_count > 10 - 3
    with pytest.raises(ScenarioParameterError) as exc:
        next(steps)
    assert exc.value.parameter == "max_map_count"
    assert f"already holds {spawn.map_count} VMAs" in exc.value.problem


# --- walk --------------------------------------------------------------------------------


def test_walk_indices_are_the_address_bits_and_the_second_access_hits() -> None:
    w = walk.story(access="write")
    assert (w.paging_levels, w.va_bits) == (4, 48)
    assert [lv.name for lv in w.levels] == ["PML4", "PDPT", "PD", "PT"]
    assert [lv.linux_name for lv in w.levels] == ["PGD", "PUD", "PMD", "PTE"]
    shifts = (39, 30, 21, 12)
    assert [lv.index for lv in w.levels] == [(w.address >> s) & 511 for s in shifts]
    assert [lv.kind for lv in w.levels] == ["table", "table", "table", "leaf"]
    leaf = w.levels[-1]
    assert w.paddr == leaf.pfn * PAGE_SIZE + (w.address & (PAGE_SIZE - 1))
    assert leaf.writable and leaf.dirty and leaf.accessed
    assert (w.first.tlb, w.first.faults, w.first.memory_refs) == (None, ("anon",), 4)
    assert (w.second.tlb, w.second.faults, w.second.memory_refs) == ("L1", (), 0)
    assert w.second.pfn == w.first.pfn
    assert w.matches_linux


def test_walk_read_of_a_fresh_page_maps_the_zero_page_read_only() -> None:
    w = walk.story(access="read")
    assert w.first.faults == ("zero-page",)
    assert not w.levels[-1].writable


def test_walk_five_levels() -> None:
    w = walk.story(0x00FF_0000_0000_0000, five_level=True)
    assert (w.paging_levels, w.va_bits) == (5, 57)
    assert [lv.name for lv in w.levels] == ["PML5", "PML4", "PDPT", "PD", "PT"]
    assert w.levels[0].index == (0x00FF_0000_0000_0000 >> 48) & 511
    assert w.matches_linux


@pytest.mark.parametrize(
    ("addr", "levels", "ok"),
    [
        (0x0000_7FFF_FFFF_FFFF, 4, True),
        (0x0000_8000_0000_0000, 4, False),
        (0xFFFF_8000_0000_0000, 4, True),
        (0x0000_8000_0000_0000, 5, True),
        (0x0100_0000_0000_0000, 5, False),
    ],
)
def test_canonical_addresses(addr: int, levels: int, ok: bool) -> None:
    assert walk.canonical(addr, levels) is ok


@pytest.mark.parametrize("addr", [0x0000_8000_0000_0000, 0xFFFF_8000_0000_0000, 0x7FFF_FFFF_F000])
def test_walk_refuses_addresses_a_process_cannot_map(addr: int) -> None:
    with pytest.raises(ScenarioParameterError) as exc:
        walk.story(addr)
    assert exc.value.parameter == "address"
    assert exc.value.problem.startswith(f"{addr:#x} ")


def test_walk_refuses_an_unknown_access() -> None:
    with pytest.raises(ScenarioParameterError) as exc:
        walk.story(access="fetch")
    assert exc.value.parameter == "access"


# --- pressure ----------------------------------------------------------------------------


def settings(ram: int, workload: int, steps: int = 5, swap: int = 8 * MB) -> Settings:
    return Settings(
        ram=ram, swap=swap, zswap="zstd", ksm=True, steps=steps, seed=3, workload=workload
    )


def test_pressure_a_workload_bigger_than_ram_swaps_and_loses_nothing() -> None:
    samples, verification, p = run_workload(settings(4 * MB, 6 * MB))
    assert [s.step for s in samples] == [1, 2, 3, 4, 5]
    assert samples[-1].pswpout > 0
    assert max(s.zswap_stored_pages for s in samples) > 0
    assert all(0 <= s.mem_free_kb <= 4 * 1024 for s in samples)
    assert verification.no_byte_lost, verification.lost[:1]
    assert verification.check_memory is None and not verification.lost
    t = totals(p, samples, verification)
    assert t["pages_written"] >= 6 * MB // PAGE_SIZE  # every page written at least once
    assert sum(t["written_by_kind"].values()) == t["pages_written"]


def test_pressure_a_workload_that_fits_never_swaps() -> None:
    samples, verification, _p = run_workload(settings(16 * MB, 1 * MB))
    assert all(s.pswpout == 0 and s.swap_used_kb == 0 for s in samples)
    assert verification.no_byte_lost


def test_pressure_same_seed_same_series() -> None:
    a, _va, _pa = run_workload(settings(4 * MB, 6 * MB, steps=3))
    b, _vb, _pb = run_workload(settings(4 * MB, 6 * MB, steps=3))
    assert a == b


def test_pressure_refused_mmap_ends_the_run() -> None:
    """Heuristic overcommit refuses one mapping larger than RAM + swap: the run cannot start."""
    with pytest.raises(ScenarioError, match=r"mmap of \d+ kB failed"):
        run_workload(settings(2 * MB, 6 * MB, swap=0))


# --- maps text ---------------------------------------------------------------------------

MAPS = "".join(
    f"{0x10000 + i * 0x1000:08x}-{0x11000 + i * 0x1000:08x} rw-p 00000000 00:00 0 \n"
    for i in range(12)
)


def test_maps_text_helpers() -> None:
    line = vma_at(MAPS, 0x12800)
    assert line is not None and (line.start, line.end) == (0x12000, 0x13000)
    assert vma_at(MAPS, 0x0F000) is None
    lines = excerpt(MAPS, 0x10000, 0x1C000)
    assert len(lines) == 4 + 1 + 3 and lines[4] == "... 5 more VMAs ..."
    assert excerpt(MAPS, 0x10000, 0x12000) == tuple(MAPS.splitlines()[:2])
    assert new_lines(MAPS, MAPS + "00020000-00021000 r--p 00000000 00:00 0 \n") == (
        "00020000-00021000 r--p 00000000 00:00 0 ",
    )


# --- the accessors the scenarios read the model through ------------------------------------


def test_process_and_machine_accessors() -> None:
    m = vmsim.Machine()
    p = m.spawn()
    assert p.paging_levels == 4 and vmsim.Machine(five_level=True).spawn().paging_levels == 5
    a = p.mmap(0, 2 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    assert p.pte(a) == 0  # mmap writes no PTE
    p.write(a, b"hello")
    pfn = p.pagemap(a, 1)[0] & PM_PFRAME_MASK
    pte = p.pte(a)
    assert pte & 0x3 == 0x3  # _PAGE_PRESENT | _PAGE_RW
    assert (pte >> 12) & ((1 << 40) - 1) == pfn
    walked = p.page_walk(a)
    assert [w.level for w in walked] == [4, 3, 2, 1] and walked[-1].entry == pte
    assert (m.page_refcount(pfn), m.page_mapcount(pfn)) == (1, 1)
    assert m.read_frame(pfn, 0, 5) == b"hello"
    p.read(a + PAGE_SIZE, 1)  # a read fault on a fresh anonymous page maps the zero page
    assert p.pagemap(a + PAGE_SIZE, 1)[0] & PM_PFRAME_MASK == m.zero_pfn
    assert m.ZSWAP_COMPRESSORS == ("zstd", "lz4", "deflate")
