"""mlock (mm/mlock.c): folio->mlock_count, PG_mlocked and the per-CPU mlock batch.

A folio mapped by a locked VMA (VM_LOCKED) counts one lock per such mapping; while the count
is above 0 it carries PG_mlocked. Moving it to the unevictable list waits for the batch
(mlock_fbatch, FOLIO_BATCH_SIZE = 31) to drain: ``mlock_drain_local()``, which
``lru_add_drain()`` runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    "munlock_folio",
]

FOLIO_BATCH_SIZE = 31
_MLOCKED = int(PageFlag.MLOCKED)
_ACTIVE = int(PageFlag.ACTIVE)


def mlock_folio(mm: AddressSpace, pfn: int) -> None:
    """mlock_folio() / mlock_new_folio(): one more locked VMA maps the folio (the kernel's
    folio->mlock_count); PG_mlocked while the count is above 0."""
    mem = mm.mem
    if mem.frames.order(pfn):
        return  # the model does not mlock large folios (THPs): see vmsim.mm.huge_memory
    counts = mem.mlock_count
    n = counts.get(pfn, 0)
    counts[pfn] = n + 1
    if not n:
        mem.frames.set_flags(pfn, _MLOCKED)
        mem.node.lru.update(pfn)
    mlock_batch_add(mem, pfn, not n)


def munlock_folio(mm: AddressSpace, pfn: int) -> None:
    """munlock_folio(): one locked VMA less maps it; the last one clears PG_mlocked."""
    mem = mm.mem
    if mem.frames.order(pfn):
        return
    mlock_batch_add(mem, pfn, False)
    counts = mem.mlock_count
    n = counts.get(pfn, 0)
    if n > 1:
        counts[pfn] = n - 1
        return
    counts.pop(pfn, None)
    if mem.frames.flags(pfn) & _MLOCKED:
        mem.frames.clear_flags(pfn, _MLOCKED)
        mem.node.lru.update(pfn)


def mlock_batch_add(mem: Kernel, pfn: int, newly_locked: bool) -> None:
    """folio_batch_add() on mlock_fbatch: the folio joins the per-CPU batch, which drains
    when full (FOLIO_BATCH_SIZE)."""
    if newly_locked:
        mem.mlock_pending.add(pfn)
    mem.mlock_batch += 1
    if mem.mlock_batch >= FOLIO_BATCH_SIZE:
        mlock_drain_local(mem)


def mlock_drain_local(mem: Kernel) -> None:
    """mlock_drain_local(): pending mlocked folios become unevictable, and lose PG_active
    (__mlock_folio())."""
    frames = mem.frames
    lru = mem.node.lru
    for pfn in mem.mlock_pending:
        if frames.flags(pfn) & _MLOCKED:
            frames.clear_flags(pfn, _ACTIVE)
            lru.update(pfn)
    mem.mlock_pending.clear()
    mem.mlock_batch = 0


def mlock_pages(mm: AddressSpace, start: int, end: int, lock: bool) -> None:
    """mlock_vma_pages_range(): a VMA range became locked (or unlocked): every page it maps
    gains (or loses) one lock."""
    if not mm.pt_used or start >= end:
        return
    zero = mm.mem.frames.zero_pfn
    for m in list(mm.pt.iter_leaves(start, end)):
        if present(m.entry) and (pfn := entry_pfn(m.entry)) != zero:
            if lock:
                mlock_folio(mm, pfn)
            else:
                munlock_folio(mm, pfn)
    mlock_drain_local(mm.mem)  # lru_add_drain(): the mlock batch is all it holds
