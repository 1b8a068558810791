"""Whole-machine consistency checks for tests (the model's CONFIG_DEBUG_VM): every count in
the frame layer recounted from the page tables, caches and swap; every TLB entry checked
against the page tables. ``Machine.check_memory()`` and ``Machine.check_tlb()`` call these."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from vmsim.hw.pte import PAGE_DIRTY, PAGE_NX, PAGE_PRESENT, PAGE_RW, pfn_of
from vmsim.mm.flags import VM_HUGETLB, VM_LOCKED
from vmsim.mm.internal import entry_pfn, present
from vmsim.mm.swapops import pte_to_swp_entry
from vmsim.phys.frames import PageFlag

if TYPE_CHECKING:
    from vmsim.mm.core import AddressSpace
    from vmsim.mm.kernel import Kernel
    from vmsim.mm.vma import Inode


def check_memory(mem: Kernel, inodes: Iterable[Inode]) -> None:
    """Assert that every frame's refcount and mapcount equal a recount from the page
    tables of every live address space, the page caches of every file still reachable
    and the swap cache; that every swap slot's count equals the swap entries naming it;
    that the reverse map, the LRU lists and the mlock counts agree with the page tables;
    that no frame is leaked; and that the frame layer's own counters hold (a debugging
    aid for tests: it walks everything). ``inodes``: the files the machine keeps open besides
    its VMAs (tmpfs, the processes' file tables)."""
    frames = mem.frames
    frames.check()
    mem.node.lru.check()
    mem.swap.check()
    zero = frames.zero_pfn
    maps: dict[int, int] = {}
    locks: dict[int, int] = {}
    rmap: dict[int, set[tuple[AddressSpace, int]]] = {}
    swaprefs: dict[tuple[int, int], int] = {}
    tables = 0
    files: dict[int, Inode] = {id(i): i for i in inodes}
    for mm in list(mem.mms.values()):
        mm.pt.check_invariants()
        tables += mm.pt.table_pages
        for v in mm.tree:
            if v.file is not None:
                files[id(v.file.inode)] = v.file.inode
        if not mm.pt_used:
            continue
        for m in mm.pt.iter_leaves(0, mm.cfg.task_size):
            vma = mm.tree.lookup(m.vaddr)
            assert vma is not None, f"PTE at {m.vaddr:#x} outside every VMA"
            if not present(m.entry):
                key = pte_to_swp_entry(m.entry)
                swaprefs[key] = swaprefs.get(key, 0) + 1
                continue
            pfn = entry_pfn(m.entry)
            if m.level > 1 and not vma.flags & VM_HUGETLB:  # a THP: a table deposited
                assert m.vaddr in mem.thp.deposit.get(mm.serial, {}), "PMD without deposit"
                if pfn == mem.thp.huge_zero_pfn:
                    continue
            if m.level > 1:
                assert frames.entire_mapcount(pfn), f"PMD maps {pfn:#x}, no entire map"
            if pfn != zero:
                head = frames.head(pfn) if frames.is_allocated(pfn) else pfn
                maps[head] = maps.get(head, 0) + 1
                rmap.setdefault(pfn, set()).add((mm, m.vaddr))
                if vma.flags & VM_LOCKED and head == pfn and not frames.order(pfn):
                    locks[pfn] = locks.get(pfn, 0) + 1
    tables += sum(len(d) for d in mem.thp.deposit.values())
    cache: dict[int, int] = {}
    for inode in files.values():
        for pfn in inode.pages.values():
            cache[pfn] = cache.get(pfn, 0) + 1
    huge_pool: set[int] = set()
    if mem.hugetlb is not None:
        mem.hugetlb.check(mem)
        for hf in mem.hugetlb.files.values():
            for pfn in hf.pages.values():
                cache[pfn] = cache.get(pfn, 0) + 1
        for h in mem.hugetlb.hstates.values():
            huge_pool.update(h.free, h.in_use)
    for pfn in mem.swap.entry_of:  # a large folio holds a reference per cached page
        head = frames.head(pfn) if frames.is_allocated(pfn) else pfn
        cache[head] = cache.get(head, 0) + 1
    for inode in files.values():
        for key in inode.swapped.values():
            swaprefs[key] = swaprefs.get(key, 0) + 1
    pool = set()
    if mem.swap.zswap is not None:
        pool.update(mem.swap.zswap.memory.pfns)
    for d in mem.swap.devices:
        if d.memory is not None:
            pool.update(d.memory.pfns)
    table_frames = 0
    for pfn in frames.allocated():
        if frames.flags(pfn) & PageFlag.PAGETABLE:
            table_frames += 1
            continue
        if pfn in pool or pfn == mem.thp.huge_zero_pfn:
            continue
        want_map = maps.get(pfn, 0)
        want_ref = want_map + cache.get(pfn, 0)
        if pfn in huge_pool:  # the pool's own reference; hugetlb folios are on no LRU
            assert frames.refcount(pfn) == want_ref + 1, f"huge page {pfn:#x}: refcount"
            assert frames.mapcount(pfn) == want_map, f"huge page {pfn:#x}: mapcount"
            continue
        assert frames.mapcount(pfn) == want_map, (
            f"pfn {pfn:#x}: mapcount {frames.mapcount(pfn)}, {want_map} PTEs map it"
        )
        assert frames.refcount(pfn) == want_ref, (
            f"pfn {pfn:#x}: refcount {frames.refcount(pfn)}, expected {want_ref}"
        )
        assert pfn in mem.node.lru.where, f"pfn {pfn:#x} in use but on no LRU list"
    assert table_frames == tables, f"{table_frames} page-table frames, {tables} in use"
    mlocked = {p for p in frames.allocated() if frames.flags(p) & PageFlag.MLOCKED}
    # a large folio's lock is per mlock_pte_range() run, not per PTE (vmsim.mm.mlock):
    # it need only carry PG_mlocked exactly while it has a count
    large = {p for p in frames.allocated() if frames.order(p)}
    small_counts = {p: n for p, n in mem.mlock_count.items() if p not in large}
    assert small_counts == locks, "mlock counts differ from the locked PTEs"
    assert mlocked - large == set(locks), "PG_mlocked differs from the locked PTEs"
    assert mlocked & large == set(mem.mlock_count) & large, "large folio: PG_mlocked"
    assert {pfn: set(s) for pfn, s in mem.rmap.items()} == rmap, (
        "the reverse map differs from the page tables"
    )
    for pfn in set(maps) | set(cache):
        assert frames.is_allocated(pfn), f"pfn {pfn:#x} in use but free"
    for head in mem.thp.deferred:
        assert frames.order(head), f"pfn {head:#x} on the deferred split queue, not large"
    for d in mem.swap.devices:
        # slots with a count or a reference (the others are 0 on both sides)
        named = {off for (t, off) in swaprefs if t == d.type}
        for off in sorted(named | {off for off, n in d.count.items() if n}):
            got = swaprefs.get((d.type, off), 0)
            assert 0 < off < d.pages, f"swap slot {off} outside device {d.type}"
            assert d.count[off] == got, f"swap slot {off}: count {d.count[off]}, {got} PTEs"


def check_tlb(mem: Kernel) -> None:
    """Assert that no TLB entry grants more than the page tables allow now: every cached
    translation of a live address space maps the frame its PTE maps, and write, dirty
    and execute rights only where the PTE has them (a debugging aid for tests)."""
    by_pcid = {mm.pcid: mm for mm in mem.mms.values() if mm.pcid >= 0}
    for where, e in mem.cpu.tlb.entries():
        mm = by_pcid.get(e.pcid)
        assert mm is not None, f"{where} entry {e} of a PCID no address space owns"
        leaf = mm.pt.get(e.vbase)
        assert leaf is not None and leaf.entry & PAGE_PRESENT, f"{where} {e}: no PTE"
        pte = leaf.entry
        assert pfn_of(pte, leaf.level) == e.pfn, f"{where} {e}: PTE maps another frame"
        assert not (e.perms & PAGE_RW and not pte & PAGE_RW), f"{where} {e}: stale write"
        assert not (not e.perms & PAGE_NX and pte & PAGE_NX), f"{where} {e}: stale exec"
        assert not (e.perms & PAGE_DIRTY and not pte & PAGE_DIRTY), f"{where} {e}: stale D"


__all__ = ["check_memory", "check_tlb"]
