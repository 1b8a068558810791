"""mlock (mm/mlock.c): folio->mlock_count, PG_mlocked and the per-CPU mlock batch.

A folio mapped by a locked VMA (VM_LOCKED) counts one lock per such mapping; while the count
is above 0 it carries PG_mlocked. Moving it to the unevictable list (PG_unevictable) waits
for the batch (mlock_fbatch, FOLIO_BATCH_SIZE = 31) to drain: ``mlock_drain_local()``, which
``lru_add_drain()`` runs; a large folio drains the batch at once.

Large folios (THPs), as 6.18 treats them: a PMD-mapped THP in a locked VMA is mlocked whole
(mlock_pte_range()'s PMD branch, mlock_new_folio() at fault); a PTE-mapped one only when one
run of PTEs maps all of it in order inside the locked range (folio_mlock_step(),
allow_mlock_munlock(), folio_within_range()); mapping a large folio's pages by PTEs never
mlocks it (__folio_add_anon_rmap()); unmapping its PMD or any of its PTEs from a locked
VMA munlocks it once (munlock_vma_folio()); splitting its PMD there leaves the lock (as this
machine's kernel shows). Every count is in pages:
unevictable_pgs_mlocked when PG_mlocked is set, unevictable_pgs_culled when the batch moves
the folio to the unevictable list, unevictable_pgs_munlocked when PG_mlocked is cleared and
unevictable_pgs_rescued when it leaves the unevictable list (__mlock_folio(),
__munlock_folio()).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmsim.constants import PAGE_SIZE, PMD_SIZE
from vmsim.hw.pagetable import PMD_LEVEL
from vmsim.hw.pte import pfn_of
from vmsim.mm.flags import VM_LOCKED
from vmsim.mm.internal import entry_pfn, present
from vmsim.phys.frames import PageFlag

if TYPE_CHECKING:
    from vmsim.mm.core import AddressSpace
    from vmsim.mm.kernel import Kernel

__all__ = [
    "FOLIO_BATCH_SIZE",
    "mlock_drain_local",
    "mlock_folio",
    "mlock_pages",
    "mlock_vma_folio",
    "munlock_folio",
    "munlock_vma_folio",
    "split_mlock_counts",
]

FOLIO_BATCH_SIZE = 31
_MLOCKED = int(PageFlag.MLOCKED)
_ACTIVE = int(PageFlag.ACTIVE)
_UNEVICTABLE = int(PageFlag.UNEVICTABLE)


def mlock_folio(mm: AddressSpace, pfn: int) -> None:
    """mlock_folio() / mlock_new_folio(): one more locked VMA maps the folio holding
    ``pfn`` (the kernel's folio->mlock_count); PG_mlocked while the count is above 0
    (unevictable_pgs_mlocked: its pages, when set). A large folio drains the batch at
    once."""
    mem = mm.mem
    frames = mem.frames
    pfn = frames.head(pfn)
    counts = mem.mlock_count
    n = counts.get(pfn, 0)
    counts[pfn] = n + 1
    if not n:
        frames.set_flags(pfn, _MLOCKED)
        mem.node.lru.update(pfn)
        mem.vmstat["unevictable_pgs_mlocked"] += frames.folio_nr_pages(pfn)
    mlock_batch_add(mem, pfn, not n)
    if frames.order(pfn):
        mlock_drain_local(mem)


def munlock_folio(mm: AddressSpace, pfn: int) -> None:
    """munlock_folio() (__munlock_folio() when the batch drains): one locked VMA less maps
    the folio holding ``pfn``; the last one clears PG_mlocked (unevictable_pgs_munlocked)
    and takes the folio off the unevictable list (unevictable_pgs_rescued). One still in
    the batch is culled and rescued in the same drain."""
    mem = mm.mem
    frames = mem.frames
    pfn = frames.head(pfn)
    mlock_batch_add(mem, pfn, False)
    counts = mem.mlock_count
    n = counts.get(pfn, 0)
    if n > 1:
        counts[pfn] = n - 1
        return
    counts.pop(pfn, None)
    if frames.flags(pfn) & _MLOCKED:
        nr = frames.folio_nr_pages(pfn)
        ev = mem.vmstat
        if pfn in mem.mlock_pending:  # __mlock_folio() then __munlock_folio() in one drain
            mem.mlock_pending.discard(pfn)
            ev["unevictable_pgs_culled"] += nr
            frames.set_flags(pfn, _UNEVICTABLE)
        frames.clear_flags(pfn, _MLOCKED)
        ev["unevictable_pgs_munlocked"] += nr
        if frames.flags(pfn) & _UNEVICTABLE:
            frames.clear_flags(pfn, _UNEVICTABLE)
            ev["unevictable_pgs_rescued"] += nr
        mem.node.lru.update(pfn)
    if frames.order(pfn):
        mlock_drain_local(mem)


def mlock_vma_folio(mm: AddressSpace, vma_flags: int, pfn: int) -> None:
    """mlock_vma_folio() for a folio mapped whole (a PMD) in a VMA with ``vma_flags``."""
    if vma_flags & VM_LOCKED:
        mlock_folio(mm, pfn)


def munlock_vma_folio(mm: AddressSpace, vma_flags: int, pfn: int) -> None:
    """munlock_vma_folio(): some mapping of the folio left a locked VMA: munlock it once
    (the kernel does not check whether it stays fully mapped there: reclaim would correct
    it)."""
    if vma_flags & VM_LOCKED and mm.mem.frames.flags(pfn) & _MLOCKED:
        munlock_folio(mm, pfn)


def mlock_batch_add(mem: Kernel, pfn: int, newly_locked: bool) -> None:
    """folio_batch_add() on mlock_fbatch: the folio joins the per-CPU batch, which drains
    when full (FOLIO_BATCH_SIZE)."""
    if newly_locked:
        mem.mlock_pending.add(pfn)
    mem.mlock_batch += 1
    if mem.mlock_batch >= FOLIO_BATCH_SIZE:
        mlock_drain_local(mem)


def mlock_drain_local(mem: Kernel) -> None:
    """mlock_drain_local(): pending mlocked folios become unevictable (PG_unevictable,
    unevictable_pgs_culled), and lose PG_active (__mlock_folio())."""
    frames = mem.frames
    lru = mem.node.lru
    for pfn in mem.mlock_pending:
        flags = frames.flags(pfn)
        if flags & _MLOCKED and not flags & _UNEVICTABLE:
            frames.clear_flags(pfn, _ACTIVE)
            frames.set_flags(pfn, _UNEVICTABLE)
            mem.vmstat["unevictable_pgs_culled"] += frames.folio_nr_pages(pfn)
            lru.update(pfn)
    mem.mlock_pending.clear()
    mem.mlock_batch = 0


def mlock_pages(mm: AddressSpace, start: int, end: int, lock: bool) -> None:
    """mlock_vma_pages_range() -> mlock_pte_range(): a VMA range became locked (or
    unlocked): every folio it maps gains (or loses) one lock. A PMD leaf's folio does (not
    the huge zero page's); a large folio mapped by PTEs does when one run of PTEs maps all
    of it, in order, inside the part of the range in this PMD (folio_mlock_step(),
    allow_mlock_munlock(): a munlock is always allowed); the run is skipped either way."""
    if not mm.pt_used or start >= end:
        return
    mem = mm.mem
    frames = mem.frames
    zero = frames.zero_pfn
    op = mlock_folio if lock else munlock_folio
    skip_to = start
    for m in list(mm.pt.iter_leaves(start, end)):
        if m.vaddr < skip_to or not present(m.entry):
            continue
        pfn = pfn_of(m.entry, m.level)
        if pfn == zero or pfn == mem.thp.huge_zero_pfn or not frames.is_allocated(pfn):
            continue
        if m.level == PMD_LEVEL or not frames.order(frames.head(pfn)):
            op(mm, pfn)
            continue
        seg_start = max(start, m.vaddr & ~(PMD_SIZE - 1))
        seg_end = min(end, (m.vaddr & ~(PMD_SIZE - 1)) + PMD_SIZE)
        step = _folio_pte_run(mm, m.vaddr, pfn, seg_end)
        skip_to = m.vaddr + step * PAGE_SIZE
        head = frames.head(pfn)
        whole = pfn == head and step == frames.folio_nr_pages(head) and m.vaddr >= seg_start
        if whole or not lock:
            op(mm, pfn)
    mlock_drain_local(mem)  # lru_add_drain(): the mlock batch is all it holds


def _folio_pte_run(mm: AddressSpace, addr: int, pfn: int, end: int) -> int:
    """folio_pte_batch(): how many PTEs from ``addr`` (before ``end``) map ``pfn``, pfn+1,
    ... within its folio."""
    frames = mm.mem.frames
    head = frames.head(pfn)
    last = head + frames.folio_nr_pages(head)
    n = 1
    while addr + n * PAGE_SIZE < end and pfn + n < last:
        leaf = mm.pt.get(addr + n * PAGE_SIZE)
        if leaf is None or leaf.level != 1 or not present(leaf.entry):
            break
        if entry_pfn(leaf.entry) != pfn + n:
            break
        n += 1
    return n


def split_mlock_counts(mm_of: Kernel, head: int, pages: list[int]) -> None:
    """After split_folio(): remap_page() maps each new small folio again through
    remove_migration_pte() -> folio_add_anon_rmap_pte(), which mlocks it in a VM_LOCKED
    VMA (mlock_vma_folio()): one lock per locked mapping. A page that inherited PG_mlocked
    from the large folio is not counted again (mlock_folio() finds the flag set); one that
    no locked VMA maps keeps it in the kernel until reclaim finds so: the model clears it
    at once, without counting."""
    mem = mm_of
    frames = mem.frames
    mem.mlock_count.pop(head, None)
    for p in pages:
        if not frames.is_allocated(p):
            continue
        locked = []
        for mm, va in mem.rmap.get(p, ()):
            vma = mm.tree.lookup(va)
            if vma is not None and vma.flags & VM_LOCKED:
                locked.append(mm)
        if frames.flags(p) & _MLOCKED:
            if locked:
                mem.mlock_count[p] = len(locked)
            else:
                frames.clear_flags(p, _MLOCKED | _UNEVICTABLE)
                mem.node.lru.update(p)
            continue
        for mm in locked:
            mlock_folio(mm, p)
