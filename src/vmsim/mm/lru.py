"""The LRU lists of one memory node (mm/swap.c, include/linux/mmzone.h: enum lru_list), and
the LRU side of mm/swap.c: folio_mark_accessed() and lru_add_drain().

(Linux's mm/swap.c is named for history: it holds the LRU, not swap. vmsim keeps those
functions here, next to the lists they move folios between, so that ``swap*.py`` means swap
devices (swapfile.py), the swap cache (swap_state.py) and swap entries (swapops.py) only.
lru_note_cost() is in mmzone.py, next to the costs it keeps.)

Folios that user memory is made of sit on one of five lists: inactive/active anonymous,
inactive/active file, unevictable (mlocked). Each list is a ``dict`` used as an ordered set:
the first key is the oldest folio, the one reclaim looks at first (the kernel's list tail);
adding a folio appends it as the newest. The model has no per-CPU batches: a folio moves at
once where the kernel would move it when its batch drains.

Which list: swap-backed folios (anonymous, shmem) go on the anon lists, others on the file
lists (a lazily freed anonymous folio, no longer swap-backed, too); ACTIVE picks active or
inactive; MLOCKED puts a folio on the unevictable list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmsim.mm import workingset
from vmsim.mm.mlock import mlock_drain_local
from vmsim.phys.frames import FrameAllocator, PageFlag

if TYPE_CHECKING:
    from vmsim.mm.kernel import Kernel

__all__ = [
    "ACTIVE_ANON",
    "ACTIVE_FILE",
    "INACTIVE_ANON",
    "INACTIVE_FILE",
    "LISTS",
    "UNEVICTABLE",
    "Lru",
    "lru_add_drain",
    "mark_accessed",
]

INACTIVE_ANON = "inactive_anon"
ACTIVE_ANON = "active_anon"
INACTIVE_FILE = "inactive_file"
ACTIVE_FILE = "active_file"
UNEVICTABLE = "unevictable"
LISTS = (INACTIVE_ANON, ACTIVE_ANON, INACTIVE_FILE, ACTIVE_FILE, UNEVICTABLE)

_ACTIVE = int(PageFlag.ACTIVE)
_SWAPBACKED = int(PageFlag.SWAPBACKED)
_MLOCKED = int(PageFlag.MLOCKED)
_LRU = int(PageFlag.LRU)
_REFERENCED = int(PageFlag.REFERENCED)


class Lru:
    """The five lists, and which list each folio is on."""

    def __init__(self, frames: FrameAllocator) -> None:
        self.frames = frames  # where the folio flags that pick a list are read
        # lruvec->lists[]: each list oldest first; kept by the methods below
        self.lists: dict[str, dict[int, None]] = {name: {} for name in LISTS}
        self.where: dict[int, str] = {}  # the list of each folio on the LRU (folio_lru_list())
        # lruvec's NR_LRU_BASE + list counters, in pages (a large folio counts its pages)
        self.nr_pages: dict[str, int] = dict.fromkeys(LISTS, 0)

    def list_for(self, pfn: int) -> str:
        flags = self.frames.flags(pfn)
        if flags & _MLOCKED:
            return UNEVICTABLE
        anon = bool(flags & _SWAPBACKED)
        if flags & _ACTIVE:
            return ACTIVE_ANON if anon else ACTIVE_FILE
        return INACTIVE_ANON if anon else INACTIVE_FILE

    def add(self, pfn: int) -> None:
        """folio_add_lru(): the newest folio of its list."""
        name = self.list_for(pfn)
        old = self.where.get(pfn)
        nr = self.frames.folio_nr_pages(pfn)
        if old is not None:
            del self.lists[old][pfn]
            self.nr_pages[old] -= nr
        self.lists[name][pfn] = None
        self.nr_pages[name] += nr
        self.where[pfn] = name
        if not self.frames.flags(pfn) & _LRU:
            self.frames.set_flags(pfn, _LRU)

    def update(self, pfn: int) -> None:
        """Its flags changed (activated, mlocked, lazily freed): move it to the right list,
        as the newest there, if it is on the LRU at all."""
        old = self.where.get(pfn)
        if old is None:
            return
        name = self.list_for(pfn)
        if name != old:
            del self.lists[old][pfn]
            self.lists[name][pfn] = None
            self.where[pfn] = name
            nr = self.frames.folio_nr_pages(pfn)
            self.nr_pages[old] -= nr
            self.nr_pages[name] += nr

    def rotate(self, pfn: int) -> None:
        """Put it back as the newest of its list (a second chance)."""
        name = self.where.get(pfn)
        if name is not None:
            lst = self.lists[name]
            del lst[pfn]
            lst[pfn] = None

    def make_oldest(self, pfn: int) -> None:
        """folio_rotate_reclaimable(): the oldest of its list, reclaimed next."""
        name = self.where.get(pfn)
        if name is not None:
            lst = self.lists[name]
            del lst[pfn]
            rest = dict(lst)
            lst.clear()
            lst[pfn] = None
            lst.update(rest)

    def remove(self, pfn: int) -> None:
        """Off the LRU (the folio is being freed)."""
        name = self.where.pop(pfn, None)
        if name is not None:
            del self.lists[name][pfn]
            self.nr_pages[name] -= self.frames.folio_nr_pages(pfn)

    def oldest(self, name: str, n: int) -> list[int]:
        """Up to ``n`` folios of a list, oldest first."""
        out: list[int] = []
        for pfn in self.lists[name]:
            if len(out) >= n:
                break
            out.append(pfn)
        return out

    def sizes(self) -> dict[str, int]:
        """The lists' sizes in pages (lruvec_page_state(NR_LRU_BASE + lru))."""
        return dict(self.nr_pages)

    def check(self) -> None:
        """Every folio on exactly the list its flags say (tests)."""
        for name, lst in self.lists.items():
            for pfn in lst:
                assert self.where[pfn] == name, f"pfn {pfn:#x} on {name}, recorded elsewhere"
                assert self.list_for(pfn) == name, f"pfn {pfn:#x} on {name}, flags disagree"
        assert sum(len(lst) for lst in self.lists.values()) == len(self.where)
        for name, lst in self.lists.items():
            nr = sum(self.frames.folio_nr_pages(p) for p in lst)
            assert nr == self.nr_pages[name], f"{name}: {self.nr_pages[name]} pages, {nr} listed"


def mark_accessed(mem: Kernel, pfn: int) -> None:
    """folio_mark_accessed() with the classic two-list LRU (no MGLRU on the reference
    kernel): the first call sets PG_referenced; the next activates the folio and clears it,
    unless the folio is unevictable (an mlocked folio whose mlock batch has drained:
    nothing happens). One mlocked but still in the batch is activated, and the drain then
    takes PG_active away (__mlock_folio()): only PG_referenced goes (kernel-verified: the
    populate of a MAP_LOCKED mapping clears PG_referenced of a page referenced before).
    (The kernel activates through a per-CPU batch; flags read after a drain agree.)"""
    frames = mem.frames
    if pfn == frames.zero_pfn:
        return
    pfn = frames.head(pfn)  # page_folio()
    flags = frames.flags(pfn)
    if not flags & _REFERENCED:
        frames.set_flags(pfn, _REFERENCED)
    elif flags & _MLOCKED:
        if pfn in mem.mlock_pending and not flags & _ACTIVE:
            frames.clear_flags(pfn, _REFERENCED)
    elif not flags & _ACTIVE:
        frames.set_flags(pfn, _ACTIVE)
        frames.clear_flags(pfn, _REFERENCED)
        mem.node.lru.update(pfn)
        workingset.activation(mem)


def lru_add_drain(mem: Kernel) -> None:
    """lru_add_drain(): drain this CPU's folio batches. The model moves folios between
    lists at once, so only the mlock batch waits (mlock_drain_local())."""
    mlock_drain_local(mem)
