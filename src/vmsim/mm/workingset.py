"""Workingset detection (mm/workingset.c): refaults of recently evicted pages.

Reclaim leaves a shadow where a folio was (the page-cache slot of a file page, the swap slot
of an anonymous or shmem page): the node's ``nonresident_age`` at eviction, which counts
evictions and activations, and whether the folio was in the workingset (PG_workingset: it
had been active). When the page comes back (a refault), its refault distance, the age now
minus the age then, is how many pages were evicted or activated meanwhile: had the page had
that much more memory it would have stayed. If the distance is at most the workingset (the
active file pages, plus the inactive file ones for an anonymous page, plus the anonymous
ones while swap has room), the page is activated at once (workingset_activate); if it was in
the workingset before, its refault also counts as a reclaim cost for its LRU type
(lru_note_cost_refault(), which steers get_scan_count()) and as workingset_restore.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmsim.mm.mmzone import lru_note_cost
from vmsim.phys.frames import PageFlag

if TYPE_CHECKING:
    from vmsim.mm.kernel import Kernel

__all__ = ["Shadow", "activation", "eviction", "is_file_lru", "refault"]

Shadow = tuple[int, bool]  # (nonresident_age at eviction, PG_workingset at eviction)

_ACTIVE = int(PageFlag.ACTIVE)
_WORKINGSET = int(PageFlag.WORKINGSET)
_FILE = int(PageFlag.FILE)
_SWAPBACKED = int(PageFlag.SWAPBACKED)


def is_file_lru(mem: Kernel, pfn: int) -> bool:
    """folio_is_file_lru(): page cache of a regular file (shmem is swap-backed: anon LRU)."""
    flags = mem.frames.flags(pfn)
    return bool(flags & _FILE) and not flags & _SWAPBACKED


def eviction(mem: Kernel, pfn: int) -> Shadow:
    """workingset_eviction(): the shadow for a folio reclaim is freeing; ages the node."""
    shadow = (mem.node.nonresident_age, bool(mem.frames.flags(pfn) & _WORKINGSET))
    mem.node.nonresident_age += 1
    return shadow


def activation(mem: Kernel) -> None:
    """workingset_activation(): a folio was activated by access."""
    mem.node.nonresident_age += 1


def refault(mem: Kernel, pfn: int, shadow: Shadow) -> None:
    """workingset_refault(): ``pfn`` was just read back where ``shadow`` was."""
    file = is_file_lru(mem, pfn)
    kind = "file" if file else "anon"
    mem.vmstat[f"workingset_refault_{kind}"] += 1
    age, workingset = shadow
    distance = mem.node.nonresident_age - age
    sizes = mem.node.lru.sizes()
    size = sizes["active_file"]
    if not file:
        size += sizes["inactive_file"]
    if mem.swap.free > 0:
        size += sizes["active_anon"]
        if file:
            size += sizes["inactive_anon"]
    if distance > size:
        return
    mem.frames.set_flags(pfn, _ACTIVE)
    mem.node.lru.update(pfn)
    mem.node.nonresident_age += 1
    mem.vmstat[f"workingset_activate_{kind}"] += 1
    if workingset:
        mem.frames.set_flags(pfn, _WORKINGSET)
        lru_note_cost(mem, file, 1, 0)  # lru_note_cost_refault()
        mem.vmstat[f"workingset_restore_{kind}"] += 1
