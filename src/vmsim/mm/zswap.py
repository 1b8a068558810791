"""Compressed memory: the zswap pool in front of swap (mm/zswap.c) and zram devices.

Both compress the real contents of the page with a real compressor: ``zstd`` (the
zstandard package), ``lz4`` (the lz4 package, block format) or ``deflate`` (zlib, raw
deflate with the kernel's 11-bit window). Compressed objects are stored the way zsmalloc
does: in size classes 16 bytes apart (32 bytes at least), so the pool's size is the sum of
the class sizes, rounded up to whole pages; those pages are RAM, taken from the machine.

zswap: a page being swapped out is first offered to the pool (zswap_store()). A page that
does not compress below a page is stored as it is, a whole page in the pool
(stored_incompressible_pages: 6.18 does this so that writeback keeps LRU order); when the pool
would pass max_pool_percent of RAM, the oldest entries are written back to the swap device
(written_back_pages, pool_limit_hit) and the store is refused until the pool is below
accept_threshold_percent of the limit. A load takes the entry out of the pool (exclusive
loads). Since 6.12 a page of zeros never reaches zswap: the swap core keeps one bit for it
(the swap zeromap, ``vmsim.mm.swapfile``).

``same_filled=True`` gives the zswap of Linux 6.11 and older instead: a page filled with one
repeated 8-byte word is kept as that word only (same_filled_pages), a page that does not
compress below a page is rejected (reject_compress_poor) and goes to the swap device, and
there is no zeromap.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Callable

import lz4.block
import zstandard

from vmsim.mm.swapops import SwpEntry

PAGE_SIZE = 4096
ZS_MIN_ALLOC_SIZE = 32
ZS_SIZE_CLASS_DELTA = 16
COMPRESSORS = ("zstd", "lz4", "deflate")
# the files of /sys/kernel/debug/zswap in 6.18 (zswap_debugfs_init())
STAT_NAMES = (
    "pool_limit_hit",
    "reject_reclaim_fail",
    "reject_alloc_fail",
    "reject_kmemcache_fail",
    "reject_compress_fail",
    "reject_compress_poor",
    "decompress_fail",
    "written_back_pages",
    "pool_total_size",
    "stored_pages",
    "stored_incompressible_pages",
)


class Compressor:
    """One of the kernel's crypto compressors, on real bytes."""

    def __init__(self, name: str) -> None:
        if name not in COMPRESSORS:
            raise ValueError(f"unknown compressor {name!r} (use {', '.join(COMPRESSORS)})")
        self.name = name
        if name == "zstd":
            cctx = zstandard.ZstdCompressor(level=3)
            dctx = zstandard.ZstdDecompressor()
            self._compress: Callable[[bytes], bytes] = cctx.compress
            self._decompress: Callable[[bytes], bytes] = lambda b: dctx.decompress(
                b, max_output_size=PAGE_SIZE
            )
        elif name == "lz4":
            self._compress = lambda b: lz4.block.compress(b, store_size=False)
            self._decompress = lambda b: lz4.block.decompress(b, uncompressed_size=PAGE_SIZE)
        else:

            def deflate(b: bytes) -> bytes:
                c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -11)
                return c.compress(b) + c.flush()

            self._compress = deflate
            self._decompress = lambda b: zlib.decompress(b, -11)

    def compress(self, data: bytes) -> bytes:
        return self._compress(data)

    def decompress(self, data: bytes) -> bytes:
        out = self._decompress(data)
        if len(out) != PAGE_SIZE:
            raise ValueError(f"{self.name}: decompressed {len(out)} bytes, not a page")
        return out


def zs_size(n: int) -> int:
    """The zsmalloc size class an object of ``n`` bytes occupies."""
    n = max(n, ZS_MIN_ALLOC_SIZE)
    return -(-n // ZS_SIZE_CLASS_DELTA) * ZS_SIZE_CLASS_DELTA


def same_filled(data: bytes) -> int | None:
    """The 8-byte word a page is filled with, or None (zswap_is_page_same_filled())."""
    word = data[:8]
    if data == word * (PAGE_SIZE // 8):
        return int.from_bytes(word, "little")
    return None


class PoolMemory:
    """RAM pages a compressed store holds, taken from and given back to the machine."""

    def __init__(self, alloc: Callable[[], int | None], free: Callable[[int], None]) -> None:
        self._alloc = alloc
        self._free = free
        self.pfns: list[int] = []
        self.bytes = 0  # sum of the size classes of the stored objects

    def resize(self, nbytes: int) -> bool:
        """Hold enough pages for ``nbytes``; False (nothing changed) if RAM ran out."""
        want = -(-nbytes // PAGE_SIZE)
        got: list[int] = []
        while len(self.pfns) + len(got) < want:
            pfn = self._alloc()
            if pfn is None:
                for p in got:
                    self._free(p)
                return False
            got.append(pfn)
        self.pfns.extend(got)
        while len(self.pfns) > want:
            self._free(self.pfns.pop())
        self.bytes = nbytes
        return True

    @property
    def pages(self) -> int:
        return len(self.pfns)


class Zswap:
    """The zswap pool. ``writeback(key, data)`` writes an evicted entry to the swap device."""

    def __init__(
        self,
        compressor: str,
        ram_pages: int,
        memory: PoolMemory,
        writeback: Callable[[SwpEntry, bytes], None],
        max_pool_percent: int = 20,
        accept_threshold_percent: int = 90,
        same_filled: bool = False,
    ) -> None:
        self.same_filled = same_filled  # the zswap of 6.11 and older (same-filled pages)
        self.compressor = Compressor(compressor)  # zswap.compressor
        self.max_pool_pages = ram_pages * max_pool_percent // 100  # zswap.max_pool_percent
        self.accept_threshold_percent = accept_threshold_percent  # zswap.accept_threshold_percent
        self.memory = memory  # the zsmalloc pool's pages (frames of the machine)
        self._writeback = writeback  # zswap_writeback_entry(): hands a page to the device
        # the zswap tree: swap entry -> (compressed bytes or None, same-filled word or None),
        # oldest first (the zswap LRU that writeback takes from)
        self.entries: OrderedDict[SwpEntry, tuple[bytes | None, int | None]] = OrderedDict()
        # the counters of /sys/kernel/debug/zswap and vmstat below; kept by store/load/_drop
        self.limit_reached = False  # zswap_pool_reached_full
        self.stored_pages = 0
        self.same_filled_pages = 0
        self.stored_incompressible_pages = 0
        self.written_back_pages = 0
        self.reject_compress_poor = 0
        self.reject_alloc_fail = 0
        self.pool_limit_hit = 0
        self.zswpout = 0
        self.zswpin = 0
        self.zswpwb = 0

    @property
    def pool_total_size(self) -> int:
        return self.memory.pages * PAGE_SIZE

    def _over_limit(self, extra: int) -> bool:
        return -(-(self.memory.bytes + extra) // PAGE_SIZE) > self.max_pool_pages

    def store(self, key: SwpEntry, data: bytes) -> bool:
        """zswap_store(): keep the page compressed; False means "write it to swap"."""
        self.invalidate(key)  # an older copy of the slot's contents is stale now
        if self.same_filled:
            word = same_filled(data)
            if word is not None:
                self.entries[key] = (None, word)
                self.stored_pages += 1
                self.same_filled_pages += 1
                self.zswpout += 1
                return True
        blob = self.compressor.compress(data)
        if len(blob) >= PAGE_SIZE:
            if self.same_filled:
                self.reject_compress_poor += 1
                return False
            blob = bytes(data)  # stored as is: a whole page
        size = zs_size(len(blob))
        if self.limit_reached:
            threshold = self.max_pool_pages * self.accept_threshold_percent // 100
            if self.memory.pages > threshold:
                return False
            self.limit_reached = False
        if self._over_limit(size):
            self.pool_limit_hit += 1
            self.limit_reached = True
            self._shrink(size)
            return False
        if not self.memory.resize(self.memory.bytes + size):
            self.reject_alloc_fail += 1
            return False
        self.entries[key] = (blob, None)
        self.stored_pages += 1
        if len(blob) == PAGE_SIZE:
            self.stored_incompressible_pages += 1
        self.zswpout += 1
        return True

    def _shrink(self, room: int) -> None:
        """shrink_worker(), run at once: write the oldest entries back until the pool is
        under the accept threshold (and ``room`` more bytes would fit)."""
        threshold = self.max_pool_pages * self.accept_threshold_percent // 100
        while self.entries and (self._over_limit(room) or self.memory.pages > threshold):
            key, (blob, word) = next(iter(self.entries.items()))
            data = self._decode(blob, word)
            self._drop(key)
            self._writeback(key, data)
            self.written_back_pages += 1
            self.zswpwb += 1

    def _decode(self, blob: bytes | None, word: int | None) -> bytes:
        if blob is None:
            assert word is not None
            return word.to_bytes(8, "little") * (PAGE_SIZE // 8)
        if len(blob) == PAGE_SIZE:  # stored as is
            return blob
        return self.compressor.decompress(blob)

    def _drop(self, key: SwpEntry) -> None:
        blob, _word = self.entries.pop(key)
        self.stored_pages -= 1
        if blob is None:
            self.same_filled_pages -= 1
        else:
            if len(blob) == PAGE_SIZE:
                self.stored_incompressible_pages -= 1
            self.memory.resize(self.memory.bytes - zs_size(len(blob)))

    def load(self, key: SwpEntry) -> bytes | None:
        """zswap_load(): the page if the pool has it (the entry leaves the pool)."""
        item = self.entries.get(key)
        if item is None:
            return None
        data = self._decode(*item)
        self._drop(key)
        self.zswpin += 1
        return data

    def invalidate(self, key: SwpEntry) -> None:
        """zswap_invalidate(): the swap slot was freed."""
        if key in self.entries:
            self._drop(key)

    def stats(self) -> dict[str, int]:
        """/sys/kernel/debug/zswap counters (same_filled_pages only in the 6.11 mode)."""
        d = {name: getattr(self, name, 0) for name in STAT_NAMES}
        if self.same_filled:
            d["same_filled_pages"] = self.same_filled_pages
        return d


__all__ = [
    "COMPRESSORS",
    "PAGE_SIZE",
    "STAT_NAMES",
    "ZS_MIN_ALLOC_SIZE",
    "ZS_SIZE_CLASS_DELTA",
    "Compressor",
    "PoolMemory",
    "Zswap",
    "same_filled",
    "zs_size",
]
