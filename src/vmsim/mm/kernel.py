"""The kernel's memory-management globals for one machine, tied together in one object.

``Kernel`` is what Linux keeps in global variables and per-CPU/per-node structures: the
frames (mem_map and the buddy allocator), the one node (``PglistData``: LRU lists,
watermarks, reclaim state), the one CPU (``vmsim.hw.cpu.Cpu``: TLBs, PCIDs), the swap
devices and the swap cache, the reverse map, the event counters. It holds state only; the
code that changes it lives in the modules named after Linux's files (page_alloc, vmscan,
rmap, swap_state, mlock, lru, ...). One ``Kernel`` per machine (``MmConfig.memory``; every
``AddressSpace`` reaches it as ``mm.mem``).

Each field below says what it mirrors in Linux and which module keeps it in step.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from vmsim.hw.cpu import Cpu
from vmsim.hw.tlb import DEFAULT_TLB_CONFIG, TlbConfig
from vmsim.mm import page_alloc, vmscan
from vmsim.mm.huge_memory import ThpState
from vmsim.mm.hugetlb import Hugetlb
from vmsim.mm.lru import Lru, lru_add_drain
from vmsim.mm.mmzone import PglistData
from vmsim.mm.swapfile import SwapSpace
from vmsim.mm.vmstat import VMSTAT_EVENTS, FaultStats
from vmsim.phys.frames import FrameAllocator

if TYPE_CHECKING:
    from vmsim.mm.core import AddressSpace
    from vmsim.mm.ksm import Ksm
    from vmsim.mm.vma import Inode

__all__ = ["Kernel"]


class Kernel:
    """The memory-management state of one machine (see the module docstring)."""

    def __init__(self, ram_bytes: int, tlb_config: TlbConfig = DEFAULT_TLB_CONFIG) -> None:
        # mem_map[] + the buddy free lists; kept by vmsim.phys (allocation: page_alloc)
        self.frames = FrameAllocator(ram_bytes)
        self.cpu = Cpu(tlb_config)  # the CPU's TLBs, PWCs, PCIDs; kept by vmsim.hw.cpu
        # pglist_data of node 0 (lruvec, watermarks, kswapd); kept by lru, vmscan, workingset
        self.node = PglistData(Lru(self.frames), page_alloc.watermarks(self.frames.total_pages))
        self.stats = FaultStats()  # machine-wide fault counters; kept by AddressSpace
        self.vmstat: dict[str, int] = dict.fromkeys(VMSTAT_EVENTS, 0)  # vm_event_states
        # every live address space, by serial, in creation order (a WeakSet would iterate in
        # id() order, which changes from run to run): the task list; kept by AddressSpace
        self.mms: weakref.WeakValueDictionary[int, AddressSpace] = weakref.WeakValueDictionary()
        # reverse map: pfn -> the (mm, address) pairs mapping it, in the order they were
        # added (anon_vma / i_mmap walks); kept by vmsim.mm.rmap
        self.rmap: dict[int, dict[tuple[AddressSpace, int], None]] = {}
        # folio->mapping, folio->index of a page-cache folio; kept by vmsim.mm.filemap
        self.cache_owner: dict[int, tuple[Inode, int]] = {}
        # folio->mapping and folio->index of an anonymous swap-cache folio, as (anon_vma root,
        # linear page index): a fault from elsewhere must copy it (ksm_might_need_to_copy());
        # kept by vmscan (swap-out) and memory.do_swap_page()
        self.swap_owner: dict[int, tuple[int, int]] = {}
        self.swap = SwapSpace()  # swap_info[] + the swap cache; kept by swapfile, swap_state
        self.mlock_count: dict[int, int] = {}  # folio->mlock_count, by pfn; kept by mlock
        # mlock_fbatch: folios mlocked (or munlocked) whose move to the unevictable list is
        # still pending on this CPU (PG_unevictable is set when the batch drains), and the
        # batch's length; kept by vmsim.mm.mlock
        self.mlock_pending: set[int] = set()
        self.mlock_batch = 0
        # out_of_memory(): called when an allocation cannot be satisfied even after reclaim:
        # kills a process and returns True, or returns False if there is nobody to kill;
        # installed by the Machine (vmsim.mm.oom_kill)
        self.oom_handler: Callable[[], bool] | None = None
        self.task: AddressSpace | None = None  # current->mm: whose syscall or fault runs
        self.ksm: Ksm | None = None  # ksmd's state, if KSM is set up (vmsim.mm.ksm)
        # hstates[] (the hugetlbfs pools), the hugetlbfs files and reservations; kept by
        # vmsim.mm.hugetlb
        self.hugetlb: Hugetlb | None = Hugetlb()
        # kcompactd: the order it was woken for (0: not woken), set by
        # compaction.wakeup_kcompactd(), cleared when it runs; vm.compaction_proactiveness
        # and the fragmentation score marks it implies (fragmentation_score_wmark())
        self.kcompactd_order = 0
        self.compaction_proactiveness = 20
        self.ra_pages = 32  # the block device's read_ahead_kb / 4 (file read-around)
        # Called when a VMA of a file goes away (the machine frees a deleted file's pages
        # once nothing maps or opens it).
        self.on_file_unmapped: Callable[[Inode], None] | None = None
        # transparent huge pages: settings, huge zero folio, deposited tables, deferred split
        # queue; kept by vmsim.mm.huge_memory
        self.thp = ThpState()
        self.frames.on_free = self._freed

    @property
    def compaction_wmark_low(self) -> int:
        """fragmentation_score_wmark(true): max(100 - proactiveness, 5)."""
        return max(100 - self.compaction_proactiveness, 5)

    @property
    def compaction_wmark_high(self) -> int:
        """fragmentation_score_wmark(false): min(low + 10, 100)."""
        return min(self.compaction_wmark_low + 10, 100)

    def _freed(self, pfn: int) -> None:
        """free_pages_prepare(): a freed folio leaves every index that names it."""
        self.node.lru.remove(pfn)
        self.rmap.pop(pfn, None)
        self.cache_owner.pop(pfn, None)
        self.swap_owner.pop(pfn, None)
        self.mlock_pending.discard(pfn)
        if self.ksm is not None:
            self.ksm.forget(pfn)
        self.mlock_count.pop(pfn, None)
        self.thp.deferred.pop(pfn, None)

    def alloc_folio(self, flags: int, noretry: bool = False) -> int:
        """A user page from the page allocator (``page_alloc.alloc_folio()``), which
        reclaims with vmscan's direct reclaim when it must."""
        return page_alloc.alloc_folio(self, flags, noretry, vmscan.direct_reclaim)

    def alloc_costly(self, flags: int, order: int, gfp: int) -> int | None:
        """A folio of a costly order (a THP) from the page allocator's slow path
        (``page_alloc.alloc_costly()``: kswapd, direct compaction and reclaim as ``gfp``
        allows), or None."""
        return page_alloc.alloc_costly(self, flags, order, gfp, vmscan.direct_reclaim)

    def lru_add_drain(self) -> None:
        """lru_add_drain() on this machine's one CPU (``vmsim.mm.lru``)."""
        lru_add_drain(self)
