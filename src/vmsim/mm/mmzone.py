"""The memory node (include/linux/mmzone.h: struct pglist_data, struct lruvec, the zone's
watermarks). The model has one node with one zone, as a small UMA machine has.

``PglistData`` holds the state reclaim and the LRU share: the lists, the watermarks and
kswapd's wake-up flag, the reclaim costs that steer get_scan_count() and the workingset
clock. ``lru_note_cost()`` (mm/swap.c) is here, next to the costs it keeps, because both
workingset.c (a refault) and vmscan.c (a reclaim pass) charge them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vmsim.mm.kernel import Kernel
    from vmsim.mm.lru import Lru

__all__ = ["SWAP_CLUSTER_MAX", "PglistData", "lru_note_cost"]

SWAP_CLUSTER_MAX = 32


class PglistData:
    """pglist_data + its lruvec + the zone's watermarks, for the one node."""

    def __init__(self, lru: Lru, wmarks: tuple[int, int, int]) -> None:
        self.lru = lru  # lruvec->lists[]; kept by vmsim.mm.lru and reclaim (vmscan)
        # zone->_watermark[WMARK_MIN/LOW/HIGH] in pages (page_alloc.watermarks())
        self.wmark_min, self.wmark_low, self.wmark_high = wmarks
        self.kswapd_wanted = (
            False  # kswapd woken and not yet run; set by page_alloc, cleared by kswapd
        )
        # pgdat->kswapd_order: the highest order kswapd was woken for (page_alloc's
        # wakeup_kswapd()); kswapd hands it to kcompactd when it goes back to sleep
        self.kswapd_order = 0
        # sc->skipped_deactivate of the running direct reclaim; kept by vmscan
        self.skipped_deactivate = False
        self.reclaiming = False  # PF_MEMALLOC: reclaim is running (it allocates from the reserve)
        self.nonresident_age = 0  # lruvec->nonresident_age; kept by vmsim.mm.workingset
        self.refaults_seen = (0, 0)  # lruvec->refaults[]: activations at the last reclaim
        self.swappiness = 60  # vm.swappiness (memcg's); read by get_scan_count()
        self.anon_cost = 0  # lruvec->anon_cost: recent reclaim cost (lru_note_cost())
        self.file_cost = 0  # lruvec->file_cost
        self.nr_pageout = 0  # pages reclaim has written out (swap or file writeback)


def lru_note_cost(mem: Kernel, file: bool, nr_io: int, nr_rotated: int) -> None:
    """lru_note_cost_unlock_irq(): reclaim cost of a list type: 32 per page written out,
    one per page rotated; both costs are halved once they pass a quarter of the LRU."""
    node = mem.node
    cost = nr_io * SWAP_CLUSTER_MAX + nr_rotated
    if not cost:
        return
    if file:
        node.file_cost += cost
    else:
        node.anon_cost += cost
    if node.file_cost + node.anon_cost > len(node.lru.where) // 4:
        node.file_cost //= 2
        node.anon_cost //= 2
