"""Physical memory: page frames with reference counts, map counts, flags and contents.

The kernel keeps a ``struct page`` for every frame of RAM; this model keeps metadata only for
frames that are allocated, so a machine of any size up to 4 PiB (52 physical address bits)
costs host memory in proportion to what is in use. Free frames come from a buddy allocator
(``vmsim.phys.buddy``). Metadata is kept per folio, at its head pfn (an order-0 allocation is a
folio of one page): ``refcount`` (folio_ref_count), ``mapcount`` (folio_mapcount: how many page
table entries map it; the kernel stores ``_mapcount = mapcount - 1``), ``flags`` (a
``PageFlag`` set, stored as a plain int). Contents are kept per 4 KiB frame, and only for frames
that hold a non-zero byte: an absent frame reads as zeros.

The shared zero page (``zero_pfn``, pfn 0, reserved like the kernel's ``empty_zero_page`` in
the kernel image and so outside MemTotal) is never allocated, freed or written; ``get``/``put``
and ``map``/``unmap`` on it do nothing, as the kernel maps it with special PTEs
(vm_normal_page() returns NULL for it) and never touches its counts.

Lifecycle (mirrors the kernel's page lifetime rules): ``alloc`` returns a folio with refcount 1
and mapcount 0 (alloc_pages() + set_page_refcounted()); ``get``/``put`` move the refcount and
the put that reaches 0 frees the folio, its metadata and its contents (put_page() ->
__folio_put()); ``map``/``unmap`` move the mapcount (folio_add_*_rmap / folio_remove_rmap_*),
and the callers hold a reference for each mapping, as the kernel does. A frame freed while
mapped, an unmap below zero, or a get/put on a free frame raises ``BadPage`` (the kernel's
bad_page() / VM_BUG_ON_FOLIO).

Accounting: the counters behind ``meminfo()`` are maintained on every change, like the
kernel's vmstat counters; ``check()`` recounts them from the metadata (tests call it after every
step). Names and meaning follow fs/proc/meminfo.c:

- AnonPages = NR_ANON_MAPPED: anonymous folios with mapcount > 0 (counted when first mapped).
- Mapped = NR_FILE_MAPPED: page-cache folios (including shmem) with mapcount > 0.
- Cached = NR_FILE_PAGES (minus swap cache and buffers, which do not exist yet): page cache,
  including shmem, mapped or not.
- Shmem = NR_SHMEM: page-cache folios that are swap-backed (tmpfs, shared anonymous, memfd).
- Dirty = NR_FILE_DIRTY: dirty page-cache folios of files that write back (shmem excluded: its
  mapping cannot write back, so folio_account_dirtied() skips it).
- Mlocked = NR_MLOCK, PageTables = NR_PAGETABLE: folios with MLOCKED / PAGETABLE set.

(Over the project's ~600 lines per module: the frame layer is one class, the model's array of
``struct page``, because every operation on a folio (allocation, refcount, mapcount, flags,
split, migration) must update the same counters behind meminfo in the same step; the buddy
allocator under it is ``vmsim.phys.buddy``.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from enum import IntFlag

from vmsim.phys.buddy import (
    MAX_PAGE_ORDER,
    MIGRATE_MOVABLE,
    MIGRATE_TYPES,
    MIGRATE_UNMOVABLE,
    MIGRATETYPE_NAMES,
    BuddyAllocator,
)

__all__ = [
    "MAX_PHYS_BYTES",
    "PAGE_SIZE",
    "BadPage",
    "FrameAllocator",
    "OutOfMemory",
    "PageFlag",
]

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
MAX_PHYS_BYTES = 1 << 52  # MAX_PHYSMEM_BITS with 5-level paging: 4 PiB


class PageFlag(IntFlag):
    """Per-folio flags. Bits that /proc/kpageflags reports use its KPF_* bit numbers
    (include/uapi/linux/kernel-page-flags.h, and KPF_MLOCKED from the kernel-internal
    kernel-page-flags.h), so that file can later be produced by masking; FILE has no KPF bit
    (page-cache membership is ``folio->mapping`` being a file's address_space)."""

    LOCKED = 1 << 0  # PG_locked: under I/O or being set up
    REFERENCED = 1 << 2  # PG_referenced
    UPTODATE = 1 << 3  # PG_uptodate: contents valid
    DIRTY = 1 << 4  # PG_dirty: must be written back before reuse
    LRU = 1 << 5  # PG_lru
    ACTIVE = 1 << 6  # PG_active
    WRITEBACK = 1 << 8  # PG_writeback
    RECLAIM = 1 << 9  # PG_reclaim
    ANON = 1 << 12  # folio->mapping has PAGE_MAPPING_ANON: anonymous memory
    SWAPCACHE = 1 << 13  # PG_swapcache
    SWAPBACKED = 1 << 14  # PG_swapbacked: anon or shmem (backed by swap, not a file)
    HEAD = 1 << 15  # PG_head: first page of a folio of order > 0
    HUGE = 1 << 17  # PG_hugetlb (KPF_HUGE): a hugetlbfs pool folio (vmsim.mm.hugetlb)
    UNEVICTABLE = 1 << 18  # PG_unevictable
    KSM = 1 << 21  # a KSM-merged page
    ZERO = 1 << 24  # the shared zero page
    PAGETABLE = 1 << 26  # page type PGTY_table: a page-table page
    MLOCKED = 1 << 33  # PG_mlocked
    FILE = 1 << 48  # model-only: in a file's page cache (shmem included)
    WORKINGSET = 1 << 49  # PG_workingset (no KPF bit): was active before it was deactivated


_ANON = int(PageFlag.ANON)
_FILE = int(PageFlag.FILE)
_SWAPBACKED = int(PageFlag.SWAPBACKED)
_DIRTY = int(PageFlag.DIRTY)
_MLOCKED = int(PageFlag.MLOCKED)
_PAGETABLE = int(PageFlag.PAGETABLE)
_HEAD = int(PageFlag.HEAD)
_ZERO = int(PageFlag.ZERO)
_HUGE = int(PageFlag.HUGE)
_COW_FLAGS = int(PageFlag.ANON | PageFlag.SWAPBACKED)
_COUNTERS = (
    "nr_file_pages",
    "nr_shmem",
    "nr_file_dirty",
    "nr_anon_mapped",
    "nr_file_mapped",
    "nr_mlock",
    "nr_pagetable",
)


class OutOfMemory(Exception):
    """No free block of the requested order: the machine's RAM is exhausted."""

    def __init__(self, order: int, free_pages: int, total_pages: int) -> None:
        super().__init__(
            f"out of memory: no free block of order {order} "
            f"({free_pages} of {total_pages} pages free)"
        )
        self.order = order
        self.free_pages = free_pages
        self.total_pages = total_pages


class BadPage(Exception):
    """A misuse the kernel reports with bad_page() or VM_BUG_ON_FOLIO(): a refcount or
    mapcount operation on a frame that is not an allocated folio head, a count going below
    zero, or a folio freed while still mapped."""


class FrameAllocator:
    """The RAM of one machine (see the module docstring). ``ram_bytes`` is rounded down to
    whole pages; pfns are ``[0, ram_bytes // PAGE_SIZE)`` and pfn 0 is the zero page."""

    def __init__(self, ram_bytes: int) -> None:
        if not 2 * PAGE_SIZE <= ram_bytes <= MAX_PHYS_BYTES:
            raise ValueError(f"RAM of {ram_bytes} bytes outside 8 KiB..4 PiB")
        self.ram_bytes = ram_bytes
        self.nr_pages = ram_bytes >> PAGE_SHIFT
        self._buddy = BuddyAllocator(self.nr_pages)
        zero = self._buddy.alloc(0)
        assert zero == 0
        self.zero_pfn = zero
        self.reserved_pages = 1
        # Per-folio metadata, keyed by head pfn (struct-of-dicts: each op touches one dict).
        self._ref: dict[int, int] = {}
        self._map: dict[int, int] = {}
        self._flags: dict[int, int] = {}
        self._order: dict[int, int] = {}  # only folios of order > 0
        # Large folios only (order > 0): the entire mapcount (PMD mappings: the kernel's
        # folio->_entire_mapcount + 1) and the per-page PTE mapcounts (page->_mapcount + 1).
        # ``_map`` stays the folio's total (folio_large_mapcount()); a page is mapped while
        # the folio is mapped entirely or its own count is above 0, which is what the
        # NR_ANON_MAPPED / NR_FILE_MAPPED counters count for a large folio, page by page.
        self._entire: dict[int, int] = {}
        self._ptemaps: dict[int, list[int]] = {}
        self._data: dict[int, bytearray] = {}  # per 4 KiB frame; absent = zeros
        # the largest order ever allocated: gigantic (1 GiB) hugetlb folios go past
        # MAX_PAGE_ORDER (alloc_contig_pages()); _head() looks that far for a head
        self._max_order = MAX_PAGE_ORDER
        # vmstat counters, in pages.
        self.nr_file_pages = 0
        self.nr_shmem = 0
        self.nr_file_dirty = 0
        self.nr_anon_mapped = 0
        self.nr_file_mapped = 0
        self.nr_mlock = 0
        self.nr_pagetable = 0
        self.nr_anon_thps = 0  # NR_ANON_THPS: pages of PMD-mapped anonymous THPs
        # Called with the head pfn when a folio is freed (the LRU and rmap let go of it).
        self.on_free: Callable[[int], None] | None = None

    # -- sizes -------------------------------------------------------------------------------

    @property
    def total_pages(self) -> int:
        """Pages the allocator manages (totalram_pages(): RAM minus the reserved zero page)."""
        return self.nr_pages - self.reserved_pages

    @property
    def free_pages(self) -> int:
        return self._buddy.nr_free

    @property
    def used_pages(self) -> int:
        return self.total_pages - self._buddy.nr_free

    @property
    def nr_folios(self) -> int:
        return len(self._ref)

    # -- accounting --------------------------------------------------------------------------

    def _account(self, flags: int, mapped: bool, nr: int) -> None:
        """Add ``nr`` pages (negative to remove) of a folio with ``flags`` to the counters.
        hugetlb folios count in none of them (the pool has its own: HugePages_*)."""
        if flags & _HUGE:
            return
        if flags & _FILE:
            self.nr_file_pages += nr
            if flags & _SWAPBACKED:
                self.nr_shmem += nr
            elif flags & _DIRTY:
                self.nr_file_dirty += nr
        if mapped:
            if flags & _ANON:
                self.nr_anon_mapped += nr
            elif flags & _FILE:
                self.nr_file_mapped += nr
        if flags & _MLOCKED:
            self.nr_mlock += nr
        if flags & _PAGETABLE:
            self.nr_pagetable += nr

    # -- allocation and lifetime -------------------------------------------------------------

    def alloc(self, flags: int = 0, order: int = 0) -> int:
        """A new folio of ``2**order`` zeroed pages with ``flags``, refcount 1, mapcount 0;
        returns its head pfn. Raises OutOfMemory if no block of that order is free."""
        if flags & (_HEAD | _ZERO):
            raise ValueError("HEAD and ZERO are set by the allocator, not by callers")
        if order > MAX_PAGE_ORDER:
            # alloc_contig_pages(): a gigantic folio is a free, aligned run of max-order
            # blocks (a 1 GiB hugetlb page), not a buddy order
            pfn = self._buddy.alloc_contig(order)
            self._max_order = max(self._max_order, order)
        else:
            # gfp_migratetype(): page tables are unmovable (GFP_PGTABLE_USER has no
            # __GFP_MOVABLE), user pages movable (GFP_HIGHUSER_MOVABLE)
            pfn = self._buddy.alloc(
                order, MIGRATE_UNMOVABLE if flags & _PAGETABLE else MIGRATE_MOVABLE
            )
        if pfn is None:
            raise OutOfMemory(order, self._buddy.nr_free, self.total_pages)
        if order:
            self._order[pfn] = order
            self._entire[pfn] = 0
            self._ptemaps[pfn] = [0] * (1 << order)
            flags |= _HEAD
        self._ref[pfn] = 1
        self._map[pfn] = 0
        self._flags[pfn] = int(flags)
        if flags:
            self._account(flags, False, 1 << order)
        return pfn

    def _free(self, pfn: int) -> None:
        """__folio_put(): the last reference is gone; give the block back to the buddy."""
        if self.on_free is not None:
            self.on_free(pfn)
        if self._map[pfn]:
            raise BadPage(f"pfn {pfn:#x} freed while mapped {self._map[pfn]} times")
        flags = self._flags.pop(pfn)
        del self._ref[pfn]
        del self._map[pfn]
        order = self._order.pop(pfn, 0)
        if order:
            del self._entire[pfn]
            del self._ptemaps[pfn]
        if flags:
            self._account(flags, False, -(1 << order))
        data = self._data
        if order:
            for p in range(pfn, pfn + (1 << order)):
                data.pop(p, None)
        else:
            data.pop(pfn, None)
        if order > MAX_PAGE_ORDER:
            self._buddy.free_contig(pfn, order)
        else:
            self._buddy.free(pfn, order)

    def _tail_head(self, pfn: int, what: str) -> int | None:
        """The head of the large folio ``pfn`` is a tail page of (page_folio()), or None for
        the zero page; BadPage if ``pfn`` is in no allocated folio."""
        if pfn == self.zero_pfn:
            return None
        for order in range(1, MAX_PAGE_ORDER + 1):
            head = pfn & -(1 << order)
            if self._order.get(head, 0) >= order:
                return head
        raise BadPage(f"{what} of pfn {pfn:#x}, which is not in an allocated folio")

    def get(self, pfn: int) -> None:
        """folio_get() on the folio holding ``pfn``: take a reference."""
        r = self._ref.get(pfn)
        if r is None:
            head = self._tail_head(pfn, "get")
            if head is None:
                return
            pfn, r = head, self._ref[head]
        self._ref[pfn] = r + 1

    def put(self, pfn: int) -> bool:
        """folio_put() on the folio holding ``pfn``: drop a reference; the last one frees
        the folio (returns True)."""
        r = self._ref.get(pfn)
        if r is None:
            head = self._tail_head(pfn, "put")
            if head is None:
                return False
            pfn, r = head, self._ref[head]
        if r > 1:
            self._ref[pfn] = r - 1
            return False
        self._free(pfn)
        return True

    def map(self, pfn: int) -> None:
        """One more page-table entry maps the folio (folio_add_{anon,file}_rmap_pte); the
        first mapping counts it in AnonPages or Mapped (page by page in a large folio). A
        hugetlb folio is mapped whole (hugetlb_add_*_rmap(): its entire mapcount) and counts
        in neither."""
        if self._flags.get(pfn, 0) & _HUGE:
            self._map[pfn] += 1
            self._entire[pfn] += 1
            return
        if pfn in self._ptemaps or pfn not in self._map:
            self._map_large(pfn, 1)
            return
        m = self._map[pfn]
        self._map[pfn] = m + 1
        if not m:
            flags = self._flags[pfn]
            if flags & _HUGE:
                return
            if flags & _ANON:
                self.nr_anon_mapped += 1 << self._order.get(pfn, 0)
            elif flags & _FILE:
                self.nr_file_mapped += 1 << self._order.get(pfn, 0)

    def unmap(self, pfn: int) -> None:
        """One page-table entry less maps the folio (folio_remove_rmap_pte; for a hugetlb
        folio hugetlb_remove_rmap(): the entire mapcount)."""
        if self._flags.get(pfn, 0) & _HUGE:
            if not self._map[pfn]:
                raise BadPage(f"unmap of pfn {pfn:#x}, which is not mapped")
            self._map[pfn] -= 1
            self._entire[pfn] -= 1
            return
        if pfn in self._ptemaps or pfn not in self._map:
            self._map_large(pfn, -1)
            return
        m = self._map[pfn]
        if not m:
            raise BadPage(f"unmap of pfn {pfn:#x}, which is not mapped")
        self._map[pfn] = m - 1
        if m == 1:
            flags = self._flags[pfn]
            if flags & _HUGE:
                return
            if flags & _ANON:
                self.nr_anon_mapped -= 1 << self._order.get(pfn, 0)
            elif flags & _FILE:
                self.nr_file_mapped -= 1 << self._order.get(pfn, 0)

    def _map_mapped_counter(self, head: int, nr: int) -> None:
        """NR_ANON_MAPPED / NR_FILE_MAPPED move by ``nr`` pages of folio ``head``."""
        flags = self._flags[head]
        if flags & _ANON:
            self.nr_anon_mapped += nr
        elif flags & _FILE:
            self.nr_file_mapped += nr

    def _map_large(self, pfn: int, delta: int) -> None:
        """A PTE mapping of page ``pfn`` of a large folio comes (+1) or goes (-1)."""
        head = pfn if pfn in self._ptemaps else self._tail_head(pfn, "map")
        if head is None:
            return
        counts = self._ptemaps[head]
        i = pfn - head
        c = counts[i] + delta
        if c < 0:
            raise BadPage(f"unmap of pfn {pfn:#x}, which is not mapped by a PTE")
        counts[i] = c
        self._map[head] += delta
        if not self._entire[head] and c == (delta > 0):
            self._map_mapped_counter(head, delta)

    def map_pmd(self, head: int) -> None:
        """folio_add_{anon,file}_rmap_pmd(): a PMD maps the whole large folio ``head``."""
        counts = self._ptemaps.get(head)
        if counts is None:
            raise BadPage(f"PMD map of pfn {head:#x}, which is not a large folio head")
        self._map[head] += 1
        self._entire[head] += 1
        if self._entire[head] == 1:
            self._map_mapped_counter(head, sum(1 for c in counts if not c))
            if self._flags[head] & _ANON:
                self.nr_anon_thps += len(counts)

    def unmap_pmd(self, head: int) -> None:
        """folio_remove_rmap_pmd()."""
        counts = self._ptemaps.get(head)
        if counts is None or not self._entire[head]:
            raise BadPage(f"PMD unmap of pfn {head:#x}, which no PMD maps")
        self._map[head] -= 1
        self._entire[head] -= 1
        if not self._entire[head]:
            self._map_mapped_counter(head, -sum(1 for c in counts if not c))
            if self._flags[head] & _ANON:
                self.nr_anon_thps -= len(counts)

    def entire_mapcount(self, pfn: int) -> int:
        """folio_entire_mapcount(): how many PMDs map the folio holding ``pfn``."""
        if pfn == self.zero_pfn:
            return 0
        return self._entire.get(self._head(pfn), 0)

    def page_mapcount(self, pfn: int) -> int:
        """folio_precise_page_mapcount(): the page-table entries mapping page ``pfn`` (PMDs
        of its folio included)."""
        if pfn == self.zero_pfn:
            return 0
        head = self._head(pfn)
        counts = self._ptemaps.get(head)
        if counts is None:
            return self._map[head]
        return self._entire[head] + counts[pfn - head]

    def mapped_pages(self, pfn: int) -> int:
        """Pages of the folio holding ``pfn`` that some entry maps (NR_*_MAPPED's share)."""
        head = self._head(pfn)
        counts = self._ptemaps.get(head)
        if counts is None:
            return 1 if self._map[head] else 0
        if self._entire[head]:
            return len(counts)
        return sum(1 for c in counts if c)

    def folio_nr_pages(self, head: int) -> int:
        """folio_nr_pages() of the folio whose head is ``head`` (1 if it is not a head)."""
        return 1 << self._order.get(head, 0)

    def head(self, pfn: int) -> int:
        """page_folio(): the head pfn of the allocated folio holding ``pfn``."""
        return self._head(pfn)

    def split(self, head: int) -> list[int]:
        """__folio_split() to order 0 of an unmapped-by-PMD large folio: every page becomes
        a folio of its own with the folio's flags (less HEAD), and one reference per PTE
        mapping it; a page no PTE maps is freed (the put after remap_page()). Extra
        references (the swap cache, pins) must have been dropped by the caller: the split
        needs refcount == mapcount + 1 (the caller's). Returns the pages still in use."""
        counts = self._ptemaps.get(head)
        if counts is None:
            raise BadPage(f"split of pfn {head:#x}, which is not a large folio head")
        if self._entire[head]:
            raise BadPage(f"split of pfn {head:#x} while a PMD maps it")
        if self._ref[head] != self._map[head] + 1:
            raise BadPage(
                f"split of pfn {head:#x}: refcount {self._ref[head]}, mapcount {self._map[head]}"
            )
        order = self._order.pop(head)
        del self._entire[head]
        del self._ptemaps[head]
        flags = self._flags[head] & ~_HEAD
        old = self._flags[head]
        nr = 1 << order
        # take the folio out of the counters as one and put its pages back one by one
        self._account(old, False, -nr)
        self._map_mapped_counter_flags(old, -sum(1 for c in counts if c))
        # the buddy allocator keeps no record of allocated blocks: the pages are freed one
        # by one from now on, and coalesce again there
        kept = []
        for i, c in enumerate(counts):
            p = head + i
            self._ref[p] = c + 1
            self._map[p] = c
            self._flags[p] = flags
            if flags:
                self._account(flags, c > 0, 1)
            kept.append(p)
        for p in kept:
            self.put(p)
        return [p for p in kept if p in self._ref]

    def _map_mapped_counter_flags(self, flags: int, nr: int) -> None:
        if flags & _ANON:
            self.nr_anon_mapped += nr
        elif flags & _FILE:
            self.nr_file_mapped += nr

    # -- metadata ----------------------------------------------------------------------------

    def _head(self, pfn: int) -> int:
        """The head pfn of the allocated folio holding ``pfn`` (BadPage if free)."""
        if pfn in self._ref:
            return pfn
        for order in range(1, self._max_order + 1):
            head = pfn & -(1 << order)
            if self._order.get(head, 0) >= order:
                return head
        raise BadPage(f"pfn {pfn:#x} is not allocated")

    def is_allocated(self, pfn: int) -> bool:
        try:
            self._head(pfn)
        except BadPage:
            return False
        return True

    def refcount(self, pfn: int) -> int:
        """The folio's reference count (1 for the zero page, which is not counted)."""
        if pfn == self.zero_pfn:
            return 1
        return self._ref[self._head(pfn)]

    def mapcount(self, pfn: int) -> int:
        """How many page-table entries map the folio (0 for the zero page: not counted)."""
        if pfn == self.zero_pfn:
            return 0
        return self._map[self._head(pfn)]

    def order(self, pfn: int) -> int:
        return 0 if pfn == self.zero_pfn else self._order.get(self._head(pfn), 0)

    def flags(self, pfn: int) -> PageFlag:
        if pfn == self.zero_pfn:
            return PageFlag.ZERO
        return PageFlag(self._flags[self._head(pfn)])

    def set_flags(self, pfn: int, flags: int) -> None:
        """Set ``flags`` on the folio holding ``pfn``, keeping the counters right."""
        self._change_flags(pfn, flags, 0)

    def clear_flags(self, pfn: int, flags: int) -> None:
        self._change_flags(pfn, 0, flags)

    def _change_flags(self, pfn: int, set_: int, clear: int) -> None:
        if (set_ | clear) & (_HEAD | _ZERO):
            raise ValueError("HEAD and ZERO are set by the allocator, not by callers")
        if pfn == self.zero_pfn:
            raise BadPage("the zero page's flags never change")
        head = self._head(pfn)
        old = self._flags[head]
        new = (old | int(set_)) & ~int(clear)
        if new == old:
            return
        nr = 1 << self._order.get(head, 0)
        if head in self._ptemaps:
            mp = self.mapped_pages(head)
            self._account(old, False, -nr)
            self._map_mapped_counter_flags(old, -mp)
            self._account(new, False, nr)
            self._map_mapped_counter_flags(new, mp)
        else:
            mapped = self._map[head] > 0
            self._account(old, mapped, -nr)
            self._account(new, mapped, nr)
        self._flags[head] = new

    def allocated(self) -> Iterator[int]:
        """Head pfns of every allocated folio (the zero page excluded)."""
        return iter(list(self._ref))

    # -- contents ----------------------------------------------------------------------------

    def read(self, pfn: int, off: int = 0, n: int = PAGE_SIZE) -> bytes:
        """``n`` bytes at ``off`` in the 4 KiB frame ``pfn`` (any frame of a folio)."""
        if off < 0 or n < 0 or off + n > PAGE_SIZE:
            raise ValueError(f"[{off}, {off + n}) is not inside one page")
        data = self._data.get(pfn)
        if data is None:
            if pfn != self.zero_pfn:
                self._head(pfn)
            return bytes(n)
        return bytes(data[off : off + n])

    def write(self, pfn: int, off: int, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` at ``off`` in frame ``pfn``. Zero bytes written to a frame that holds
        none are not stored (it already reads as zeros)."""
        n = len(data)
        if off < 0 or off + n > PAGE_SIZE:
            raise ValueError(f"[{off}, {off + n}) is not inside one page")
        if pfn == self.zero_pfn:
            raise BadPage("write to the zero page")
        page = self._data.get(pfn)
        if page is None:
            self._head(pfn)
            if not any(data):
                return
            page = self._data[pfn] = bytearray(PAGE_SIZE)
        page[off : off + n] = data

    def zero_range(self, pfn: int, nr: int) -> None:
        """Frames ``[pfn, pfn + nr)`` of an allocated folio read as zeros from now on
        (folio_zero_user() of a reused hugetlb page)."""
        self._head(pfn)
        data = self._data
        if len(data) < nr:
            for p in [p for p in data if pfn <= p < pfn + nr]:
                del data[p]
        else:
            for p in range(pfn, pfn + nr):
                data.pop(p, None)

    def copy_frames(self, src_pfn: int, dst_pfn: int, nr: int) -> None:
        """copy_user_large_folio(): frames ``[dst_pfn, dst_pfn + nr)`` get the contents of
        ``[src_pfn, src_pfn + nr)`` (only frames holding data are visited)."""
        self.zero_range(dst_pfn, nr)
        data = self._data
        src = [p for p in data if src_pfn <= p < src_pfn + nr]
        for p in src:
            data[dst_pfn + (p - src_pfn)] = bytearray(data[p])

    def move_folio(self, old: int, new: int) -> None:
        """migrate_folio() of an order-0 folio: refcount, mapcount, flags and contents of
        ``old`` move to frame ``new``, which the caller took off the free lists
        (compaction's isolated free page); ``old`` goes back to the buddy allocator. The
        counters do not change: the same folio lives elsewhere. The caller moves every
        other index that names the frame (PTEs, reverse map, LRU, page cache)."""
        if old not in self._ref or old in self._order:
            raise BadPage(f"migration of pfn {old:#x}, which is not an order-0 folio")
        if self.is_allocated(new):
            raise BadPage(f"migration to pfn {new:#x}, which is in use")
        for d in (self._ref, self._map, self._flags):
            d[new] = d.pop(old)
        data = self._data.pop(old, None)
        if data is not None:
            self._data[new] = data
        self._buddy.free(old, 0)

    @property
    def buddy(self) -> BuddyAllocator:
        """The free lists (compaction scans and isolates from them)."""
        return self._buddy

    def has_data(self, pfn: int) -> bool:
        """Whether the frame's contents are stored (False: it reads as zeros)."""
        return pfn in self._data

    def copy(self, src_pfn: int, flags: int = _COW_FLAGS) -> int:
        """A new order-0 folio holding a copy of frame ``src_pfn``: the copy step of a
        copy-on-write fault (wp_page_copy(): the new folio is anonymous and swap-backed; a
        copy of the zero page is a zeroed page). Raises OutOfMemory like ``alloc``."""
        if src_pfn != self.zero_pfn:
            self._head(src_pfn)
        new = self.alloc(flags)
        src = self._data.get(src_pfn)
        if src is not None:
            self._data[new] = bytearray(src)
        return new

    def copy_into(self, src_pfn: int, dst_pfn: int) -> None:
        """copy_highpage(): frame ``dst_pfn`` gets the contents of ``src_pfn``."""
        if src_pfn != self.zero_pfn:
            self._head(src_pfn)
        self._head(dst_pfn)
        src = self._data.get(src_pfn)
        if src is None:
            self._data.pop(dst_pfn, None)
        else:
            self._data[dst_pfn] = bytearray(src)

    # -- reporting ---------------------------------------------------------------------------

    def buddyinfo(self, zone: str = "Normal") -> str:
        """/proc/buddyinfo (frag_show_print()): free blocks of each order 0..10 of the one
        zone: ``Node %d, zone %8s `` then ``%6lu `` per order."""
        counts = "".join(f"{self._buddy.nr_free_blocks(o):6d} " for o in range(MAX_PAGE_ORDER + 1))
        return f"Node 0, zone {zone:>8} {counts}\n"

    def pagetypeinfo(self, zone: str = "Normal") -> str:
        """/proc/pagetypeinfo (pagetypeinfo_showfree(), pagetypeinfo_showblockcount()):
        free blocks per order and migrate type, then the pageblocks of each type. HighAtomic
        and Isolate, which the model never uses, are 0."""
        b = self._buddy
        orders = range(MAX_PAGE_ORDER + 1)
        names = (*MIGRATETYPE_NAMES, "HighAtomic", "Isolate")
        lines = [
            "Page block order: 9",
            "Pages per block:  512",
            "",
            f"{'Free pages count per migrate type at order':<43} "
            + "".join(f"{o:6d} " for o in orders),
        ]
        for mt, name in enumerate(names):
            counts = [b.nr_free_blocks_mt(o, mt) if mt < MIGRATE_TYPES else 0 for o in orders]
            lines.append(
                f"Node {0:4d}, zone {zone:>8}, type {name:>12} "
                + "".join(f"{n:6d} " for n in counts)
            )
        per = [0] * len(names)
        for mt in b.block_mt.values():
            per[mt] += 1
        per[MIGRATE_MOVABLE] = ((self.nr_pages + 511) >> 9) - sum(per)
        lines += [
            "",
            f"{'Number of blocks type ':<23}" + "".join(f"{n:>12} " for n in names),
            f"Node 0, zone {zone:>8} " + "".join(f"{n:12d} " for n in per),
        ]
        return "\n".join(lines) + "\n"

    def migratetype(self, pfn: int) -> int:
        """The migrate type of the pageblock holding ``pfn``."""
        return self._buddy.migratetype(pfn)

    def free_blocks(self, order: int) -> int:
        """Free blocks of ``order`` (a /proc/buddyinfo column)."""
        return self._buddy.nr_free_blocks(order)

    def meminfo(self) -> dict[str, int]:
        """/proc/meminfo lines this layer knows, in the kernel's order, in kB."""
        kb = PAGE_SIZE >> 10
        return {
            "MemTotal": self.total_pages * kb,
            "MemFree": self.free_pages * kb,
            "Cached": self.nr_file_pages * kb,
            "Mlocked": self.nr_mlock * kb,
            "Dirty": self.nr_file_dirty * kb,
            "AnonPages": self.nr_anon_mapped * kb,
            "Mapped": self.nr_file_mapped * kb,
            "Shmem": self.nr_shmem * kb,
            "PageTables": self.nr_pagetable * kb,
        }

    def check(self) -> None:
        """Assert the invariants: counters equal a recount from the metadata; metadata and
        contents belong to allocated folios; the buddy allocator is consistent (tests only)."""
        keys = set(self._ref)
        assert keys == set(self._map) == set(self._flags), "metadata dicts disagree"
        assert set(self._order) <= keys, "order recorded for a free pfn"
        assert set(self._order) == set(self._entire) == set(self._ptemaps), "large folio maps"
        assert all(r > 0 for r in self._ref.values()), "allocated folio with refcount 0"
        assert all(m >= 0 for m in self._map.values()), "negative mapcount"
        recount = FrameAllocator.__new__(FrameAllocator)
        for name in _COUNTERS:
            setattr(recount, name, 0)
        used = 0
        for pfn, flags in self._flags.items():
            nr = 1 << self._order.get(pfn, 0)
            used += nr
            counts = self._ptemaps.get(pfn)
            if counts is None:
                recount._account(flags, self._map[pfn] > 0, nr)
            else:
                assert self._map[pfn] == self._entire[pfn] + sum(counts), f"mapcount {pfn:#x}"
                recount._account(flags, False, nr)
                if not flags & _HUGE:  # hugetlb folios are in neither NR_*_MAPPED
                    recount._map_mapped_counter_flags(flags, self.mapped_pages(pfn))
            assert bool(flags & _HEAD) == (nr > 1), f"HEAD flag wrong at {pfn:#x}"
        for name in _COUNTERS:
            assert getattr(recount, name) == getattr(self, name), f"{name} drifted"
        thps = sum(
            1 << self._order[p]
            for p, n in self._entire.items()
            if n and self._flags[p] & _ANON and not self._flags[p] & _HUGE
        )
        assert thps == self.nr_anon_thps, "nr_anon_thps drifted"
        assert used == self.used_pages, f"{used} pages in folios, {self.used_pages} used"
        for pfn, page in self._data.items():
            assert self.is_allocated(pfn), f"contents kept for free pfn {pfn:#x}"
            assert len(page) == PAGE_SIZE
        assert self.zero_pfn not in self._data, "the zero page holds data"
        self._buddy.check()
        # the free lists and the folios agree: no allocated frame is free or never handed out
        buddy = self._buddy
        free_heads = [{p for d in lists for p in d} for lists in buddy.free_lists]
        for pfn in [*self._ref, self.zero_pfn]:
            assert pfn < buddy.frontier, f"pfn {pfn:#x} allocated above the frontier"
            for o, heads in enumerate(free_heads):
                assert pfn & -(1 << o) not in heads, f"allocated pfn {pfn:#x} in a free block"
