"""Swap space: devices with slots, the swap cache, and where a swapped page's bytes live
(mm/swapfile.c, the swap cache's index of mm/swap_state.c, mm/page_io.c, drivers/block/zram).
The swap-in paths (readahead, reading a slot into a folio, freeing the swap cache) are in
``vmsim.mm.swap_state``.

A slot is named by ``SwpEntry(type, offset)`` (``vmsim.mm.swapops``), as in the swap entry a non-present PTE holds
(``vmsim.hw.pte.swp_entry``); offset 0 of every device is its header and never used. Each
slot has a reference count (``swap_map``: the PTEs and shmem page-cache slots that name it)
and a cached flag (SWAP_HAS_CACHE: a folio in the swap cache holds it); it is free when both
are gone. Slots are handed out in order from a cursor that wraps (the kernel's per-CPU
clusters have the same effect for one CPU: consecutive swap-outs get consecutive slots, which
is what makes cluster readahead useful).

A large folio swapped out whole (folio_alloc_swap() of order > 0, 6.18's cluster allocator)
takes a naturally aligned run of its size inside one cluster of SWAPFILE_CLUSTER (512) slots:
a cluster already serving that order, else a free one (``alloc_cluster()``); the cluster
then serves that order only until it is empty again (ci->order). Cluster 0 holds the header
and a partial last cluster is short: both serve order 0 only, as at swapon. Order-0 slots
keep out of clusters serving a larger order while any other slot is free (order-0
allocations steal from them only as a last resort).

Where the bytes are: a page of zeros is only a bit in the swap zeromap (swap_writeout() since
6.12: no I/O, counted as swpout_zero / swpin_zero, never offered to zswap); otherwise zswap's
pool is tried first, and the device gets what the pool refuses or writes back: a disk or SSD
keeps the page, a zram device keeps it compressed in RAM (``Machine(swap_device="zram")``).

Device kinds: "disk" is rotational (like this machine's /dev/vda): while one is in use the
kernel reads ahead by swap cluster (nr_rotate_swap); "ssd" and "zram" are not, so faults read
ahead by VMA (swap_vma_readahead(), /sys/kernel/mm/swap/vma_ra_enabled); zram is also
synchronous: a slot named by one PTE is read straight into a new page, bypassing the swap
cache and readahead (SWP_SYNCHRONOUS_IO in do_swap_page()).
"""

from __future__ import annotations

from vmsim.mm.swapops import SwpEntry
from vmsim.mm.zswap import PAGE_SIZE, Compressor, PoolMemory, Zswap, zs_size

Key = SwpEntry

PAGE_CLUSTER = 3  # /proc/sys/vm/page-cluster: readahead of 2**3 = 8 slots
SWAPFILE_CLUSTER = 512  # slots per swap cluster (HPAGE_PMD_NR with CONFIG_THP_SWAP)
_CLUSTER_SHIFT = 9
DEVICE_KINDS = ("disk", "ssd", "zram")


class _Zeros(dict[int, int]):
    """A dict that reads 0 for a missing key (and does not store it)."""

    def __missing__(self, key: int) -> int:
        return 0


class SwapDevice:
    """One swap area. ``kind`` is "disk" (rotational), "ssd" or "zram" (compressed in RAM)."""

    def __init__(
        self,
        type_: int,
        pages: int,
        kind: str = "disk",
        compressor: str = "lzo-rle",
        memory: PoolMemory | None = None,
    ) -> None:
        if pages < 2:
            raise ValueError("a swap device needs at least 2 pages (one is the header)")
        self.type = type_  # swap_info_struct->type: its index in swap_info[]
        self.pages = pages  # ->max: slots, the header included
        self.kind = kind
        # swap_map[], sparse: a slot absent from ``count``/``cached`` is 0, so a 1 TiB device
        # costs nothing up front (only the slots in use take memory)
        self.count: dict[int, int] = _Zeros()  # ->swap_map[]: entries naming each slot
        self.cached: dict[int, int] = _Zeros()  # SWAP_HAS_CACHE of each slot; kept by SwapSpace
        self.data: dict[int, bytes] = {}  # the device's blocks (page_io.c writes them)
        self.cursor = 1  # the per-CPU cluster's next offset: slots are handed out in order
        self.inuse = 0  # ->inuse_pages; kept by alloc() / _forget()
        # swap_cluster_info: the order a cluster serves (absent: 0) and its used slots
        self.cluster_order: dict[int, int] = {}
        self.cluster_used: dict[int, int] = _Zeros()
        if kind not in DEVICE_KINDS:
            raise ValueError(f"swap device kind must be one of {', '.join(DEVICE_KINDS)}")
        self.rotational = kind == "disk"  # !SWP_SOLIDSTATE: swapin reads by cluster
        self.synchronous = kind == "zram"  # SWP_SYNCHRONOUS_IO: do_swap_page() skips the cache
        self.compressor = Compressor("lz4" if compressor == "lzo-rle" else compressor)  # zram's
        self.memory = memory  # zram: where its compressed pages live (zsmalloc's pages)
        self.orig_data_size = 0  # zram mm_stat
        self.compr_data_size = 0

    @property
    def free(self) -> int:
        return self.pages - 1 - self.inuse

    def alloc(self) -> int | None:
        """get_swap_pages(): the next free slot from the cursor, or None when full."""
        if not self.free:
            return None
        n = self.pages
        orders = self.cluster_order
        for steal in (False, True) if orders else (True,):
            off = self.cursor
            for _ in range(n):
                if off >= n:
                    off = 1
                if (
                    not self.count[off]
                    and not self.cached[off]
                    and (steal or (off >> _CLUSTER_SHIFT) not in orders)
                ):
                    self.cursor = off + 1
                    self._take(off, 1)
                    return off
                off += 1
        return None  # pragma: no cover

    def _take(self, off: int, nr: int) -> None:
        self.inuse += nr
        self.cluster_used[off >> _CLUSTER_SHIFT] += nr

    def alloc_cluster(self, order: int) -> int | None:
        """cluster_alloc_swap_entry() for ``order`` > 0: the first offset of a free, aligned
        run of 2**order slots in a cluster serving that order, else in a free cluster; None
        when there is none (the folio is split and swapped page by page)."""
        nr = 1 << order
        if nr > SWAPFILE_CLUSTER or self.free < nr:
            return None
        whole = self.pages // SWAPFILE_CLUSTER  # clusters lying wholly inside the device
        serving = sorted(c for c, o in self.cluster_order.items() if o == order)
        free = (c for c in range(1, whole) if not self.cluster_used[c])
        for c in (*serving, *free):
            base = c << _CLUSTER_SHIFT
            for off in range(base, base + SWAPFILE_CLUSTER, nr):
                if not any(self.count[o] or self.cached[o] for o in range(off, off + nr)):
                    self.cluster_order[c] = order
                    self._take(off, nr)
                    return off
        return None

    def release(self, off: int) -> None:
        """swap_entry_range_free(): the slot's data goes too; an emptied cluster is free
        for any order again."""
        self.inuse -= 1
        c = off >> _CLUSTER_SHIFT
        self.cluster_used[c] -= 1
        if not self.cluster_used[c]:
            del self.cluster_used[c]
            self.cluster_order.pop(c, None)
        self._forget(off)

    def _forget(self, off: int) -> None:
        old = self.data.pop(off, None)
        if self.kind == "zram" and old is not None and self.memory is not None:
            self.orig_data_size -= PAGE_SIZE
            self.compr_data_size -= len(old)
            self.memory.resize(self.memory.bytes - zs_size(len(old)))

    def write(self, off: int, data: bytes) -> bool:
        """swap_writepage() to this device; False if zram could not get the RAM."""
        self._forget(off)
        if self.kind == "zram":
            blob = self.compressor.compress(data)
            if len(blob) >= PAGE_SIZE * 3 // 4:  # huge_class_size: stored as is
                blob = data
            assert self.memory is not None
            if not self.memory.resize(self.memory.bytes + zs_size(len(blob))):
                return False
            self.data[off] = blob
            self.orig_data_size += PAGE_SIZE
            self.compr_data_size += len(blob)
            return True
        if any(data):
            self.data[off] = bytes(data)
        return True

    def read(self, off: int) -> bytes:
        blob = self.data.get(off)
        if blob is None:
            return bytes(PAGE_SIZE)
        if self.kind == "zram" and len(blob) != PAGE_SIZE:
            return self.compressor.decompress(blob)
        return blob


class SwapSpace:
    """Every swap device, the swap cache and zswap, for one machine."""

    def __init__(self) -> None:
        self.devices: list[SwapDevice] = []  # swap_info[], by type; set up by the Machine
        # the swap cache (swap_address_space()): entry -> pfn, and folio->swap of each
        # swap-cache folio; kept by add_to_cache() / remove_from_cache() (swap_state.py)
        self.cache: dict[Key, int] = {}
        self.entry_of: dict[int, Key] = {}
        self.zswap: Zswap | None = None  # the zswap pool in front of the devices, if enabled
        self.pswpin = 0  # vmstat pswpin / pswpout: pages read from / written to a device
        self.pswpout = 0
        self.use_zeromap = True  # 6.12+; off for the 6.11 zswap (same-filled pages)
        self.zeromap: set[Key] = set()
        self.shadows: dict[Key, tuple[int, bool]] = {}  # workingset shadows of swapped pages
        self.swpout_zero = 0  # vmstat swpout_zero / swpin_zero: zeromap hits
        self.swpin_zero = 0
        self.vma_ra_enabled = True  # /sys/kernel/mm/swap/vma_ra_enabled
        self.page_cluster = PAGE_CLUSTER  # vm.page-cluster
        # cluster readahead state (swap_state.c globals: swapin_readahead_hits,
        # __swapin_nr_pages()'s prev_offset and last_readahead_pages); kept by swap_state
        self.readahead_hits = 4
        self.prev_offset = 0
        self.last_ra_pages = 0

    def use_vma_readahead(self) -> bool:
        """swap_use_vma_readahead(): enabled, and no rotational device in use."""
        return self.vma_ra_enabled and not any(d.rotational for d in self.devices)

    @property
    def total(self) -> int:
        return sum(d.pages - 1 for d in self.devices)

    @property
    def free(self) -> int:
        return sum(d.free for d in self.devices)

    def full(self) -> bool:
        """vm_swap_full(): more than half of swap in use."""
        return self.free * 2 < self.total

    def alloc(self) -> Key | None:
        for d in self.devices:
            off = d.alloc()
            if off is not None:
                return SwpEntry(d.type, off)
        return None

    def alloc_folio(self, order: int) -> list[Key] | None:
        """folio_alloc_swap() of a large folio: 2**order consecutive slots of one cluster
        of the first device that has them (swap_alloc_slow()), or None."""
        for d in self.devices:
            off = d.alloc_cluster(order)
            if off is not None:
                return [SwpEntry(d.type, o) for o in range(off, off + (1 << order))]
        return None

    def device(self, key: Key) -> SwapDevice:
        return self.devices[key[0]]

    def count(self, key: Key) -> int:
        return self.device(key).count[key[1]]

    def dup(self, key: Key) -> None:
        """swap_duplicate(): one more PTE (or shmem slot) names the entry."""
        self.device(key).count[key[1]] += 1

    def put(self, key: Key) -> None:
        """swap_free(): one reference less; the slot is freed when none is left."""
        d = self.device(key)
        d.count[key[1]] -= 1
        assert d.count[key[1]] >= 0, f"swap count of {key} below zero"
        self._maybe_free(key)

    def _maybe_free(self, key: Key) -> None:
        d = self.device(key)
        if not d.count[key[1]] and not d.cached[key[1]]:
            if self.zswap is not None:
                self.zswap.invalidate(key)
            self.zeromap.discard(key)
            self.shadows.pop(key, None)
            d.release(key[1])

    def add_to_cache(self, key: Key, pfn: int) -> None:
        self.cache[key] = pfn
        self.entry_of[pfn] = key
        self.device(key).cached[key[1]] = 1

    def remove_from_cache(self, pfn: int) -> Key:
        """delete_from_swap_cache(): the folio lets go of its slot (freed if unused)."""
        key = self.entry_of.pop(pfn)
        del self.cache[key]
        self.device(key).cached[key[1]] = 0
        self._maybe_free(key)
        return key

    def write(self, key: Key, data: bytes) -> str:
        """swap_writeout(): a zero page sets its zeromap bit, anything else goes to zswap
        first, then the device. Returns where it went ("zero", "zswap", "device",
        "failed")."""
        if self.use_zeromap:
            if not any(data):
                self.zeromap.add(key)
                self.device(key)._forget(key[1])
                if self.zswap is not None:
                    self.zswap.invalidate(key)
                self.swpout_zero += 1
                return "zero"
            self.zeromap.discard(key)
        if self.zswap is not None and self.zswap.store(key, data):
            return "zswap"
        if self.zswap is not None:
            self.zswap.invalidate(key)
        if not self.device(key).write(key[1], data):
            return "failed"
        self.pswpout += 1
        return "device"

    def write_folio(self, keys: list[Key], data: list[bytes]) -> str:
        """swap_writeout() of a large folio: a folio of zeros only sets its zeromap bits
        (is_folio_zero_filled(): swpout_zero by pages, no I/O); otherwise zswap_store()
        takes it page by page, all or nothing (a page it refuses drops the pages already
        stored, and ZSWPOUT counts only a whole success); else the device writes every
        page (pswpout by pages). Returns "zero", "zswap", "device" or "failed"."""
        if self.use_zeromap:
            if not any(any(d) for d in data):
                for key in keys:
                    self.zeromap.add(key)
                    self.device(key)._forget(key[1])
                    if self.zswap is not None:
                        self.zswap.invalidate(key)
                self.swpout_zero += len(keys)
                return "zero"
            self.zeromap.difference_update(keys)
        z = self.zswap
        if z is not None:
            stored = 0
            for key, d in zip(keys, data, strict=True):
                if not z.store(key, d):
                    break
                stored += 1
            else:
                return "zswap"
            z.zswpout -= stored
            for key in keys:
                z.invalidate(key)
        for key, d in zip(keys, data, strict=True):
            if not self.device(key).write(key[1], d):
                return "failed"
        self.pswpout += len(keys)
        return "device"

    def writeback(self, key: Key, data: bytes) -> None:
        """zswap writeback: the pool gives an entry to the device."""
        self.device(key).write(key[1], data)
        self.pswpout += 1

    def read(self, key: Key) -> tuple[bytes, str]:
        """swap_read_folio(): zeros if the zeromap says so, else from zswap if it has the
        entry, else the device."""
        if key in self.zeromap:
            self.swpin_zero += 1
            return bytes(PAGE_SIZE), "zero"
        if self.zswap is not None:
            data = self.zswap.load(key)
            if data is not None:
                return data, "zswap"
        self.pswpin += 1
        return self.device(key).read(key[1]), "device"

    def check(self) -> None:
        for d in self.devices:
            slots = {off for off, n in d.count.items() if n} | {
                off for off, c in d.cached.items() if c
            }
            used = len(slots)
            assert used == d.inuse, f"swap device {d.type}: {used} slots used, {d.inuse} counted"
            per_cluster: dict[int, int] = {}
            for off in slots:
                per_cluster[off >> _CLUSTER_SHIFT] = per_cluster.get(off >> _CLUSTER_SHIFT, 0) + 1
            assert per_cluster == dict(d.cluster_used), f"swap device {d.type}: cluster counts"
            assert set(d.cluster_order) <= set(per_cluster), "an empty cluster keeps its order"
        for key, pfn in self.cache.items():
            assert self.entry_of[pfn] == key
            assert self.device(key).cached[key[1]]


__all__ = [
    "DEVICE_KINDS",
    "PAGE_CLUSTER",
    "SWAPFILE_CLUSTER",
    "Key",
    "SwapDevice",
    "SwapSpace",
]
