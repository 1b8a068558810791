"""hugetlbfs: pools of huge pages reserved up front (mm/hugetlb.c, fs/hugetlbfs/inode.c).

One module, as mm/hugetlb.c is one file: pools, reservations, faults and the /proc counters
all move the same per-size counters (free, reserved, surplus).

One ``HState`` per huge page size of x86-64 (struct hstate): 2 MiB (order 9, mapped by PMD
leaves) and 1 GiB (order 18, PUD leaves; allocated as a gigantic contiguous run,
alloc_contig_pages()). Its counters are the kernel's:

- ``nr_huge_pages``: pages in the pool (persistent + surplus), HugePages_Total;
- ``free``: free pages (hugepage_freelists, LIFO as enqueue/dequeue use the list head),
  HugePages_Free = ``len(free)``;
- ``resv_huge_pages``: pages promised to mappings and not yet faulted in, HugePages_Rsvd;
- ``surplus_huge_pages``: pages above ``nr_hugepages`` taken from the buddy allocator under
  ``nr_overcommit_hugepages``, HugePages_Surp; they go back to the buddy allocator when freed.

Invariants (``check()``): ``resv_huge_pages <= len(free)`` (a reservation is a free page
somebody will take), ``surplus_huge_pages <= nr_huge_pages``, every pool page is an allocated
folio of the hstate's order with PG_hugetlb, and a free one has refcount 1 (the pool's
reference, which the model keeps on every pool page: a pool page is never returned to the
buddy allocator by a put, only by shrinking the pool or freeing a surplus page).

Files: a MAP_HUGETLB mapping gets its own unlinked file (hugetlb_file_setup():
``/anon_hugepage (deleted)``), memfd_create(MFD_HUGETLB) one named ``/memfd:NAME``. The file's
inode has ``huge_shift`` set; its page cache (``HugetlbFile.pages``: huge page index -> head
pfn) and its reservation map (``HugetlbFile.resv``: indices reserved for shared mappings) are
kept here, keyed by the inode. A private mapping's reservations (HPAGE_RESV_OWNER) are kept per
(address space, file): the indices still reserved; a fault consumes one, closing the VMA
gives back the unused ones (hugetlb_vm_op_close()). A forked child owns none.

Reservations are taken at mmap time (hugetlb_reserve_pages()): a mapping the pool cannot
cover fails with ENOMEM, unless it is MAP_NORESERVE; a fault that then finds no free page
beyond the reservations (and no surplus page to allocate) gets SIGBUS (VM_FAULT_SIGBUS from
alloc_hugetlb_folio()'s -ENOSPC).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vmsim.errors import BusError, oserror
from vmsim.hw.pagetable import PMD_LEVEL, PUD_LEVEL
from vmsim.hw.pte import PAGE_ACCESSED, PAGE_DIRTY, PAGE_PSE, PAGE_RW, pfn_pte
from vmsim.mm.compaction import try_to_compact_pages
from vmsim.mm.flags import (
    VM_DONTEXPAND,
    VM_HUGETLB,
    VM_MAYSHARE,
    VM_NORESERVE,
    VM_SHARED,
    VM_WRITE,
)
from vmsim.mm.internal import entry_pfn, is_cow_mapping, page_prot, present
from vmsim.mm.rmap import rmap_add, rmap_remove
from vmsim.mm.vma import Inode, OpenFile
from vmsim.phys.buddy import MAX_PAGE_ORDER
from vmsim.phys.frames import OutOfMemory, PageFlag

if TYPE_CHECKING:
    from vmsim.mm.core import AddressSpace
    from vmsim.mm.kernel import Kernel
    from vmsim.mm.vma import Vma

__all__ = [
    "HSTATE_SIZES",
    "HState",
    "Hugetlb",
    "HugetlbFile",
    "copy_hugetlb_page_range",
    "hstate_sizelog",
    "hugetlb_change_protection",
    "hugetlb_fault",
    "hugetlb_file_setup",
    "hugetlb_reserve_file",
    "hugetlb_vmtruncate",
    "hugetlbfs_file_mmap",
    "release_file",
    "set_max_huge_pages",
    "unmap_hugepage_range",
]

PAGE_SHIFT = 12
# The sizes x86-64 has (hugetlb_add_hstate() for PMD_ORDER and, with X86_FEATURE_GBPAGES,
# PUD_ORDER): name as Machine(hugepages=...) takes it -> huge_page_shift
HSTATE_SIZES = {"2M": 21, "1G": 30}
# The minor numbers of the two internal hugetlbfs mounts on this machine (00:11 for 2 MiB,
# 00:12 for 1 GiB, as /proc/PID/maps shows a MAP_HUGETLB mapping): anonymous devices given
# out at boot in mount order
_HUGETLBFS_DEV = {21: (0, 0x11), 30: (0, 0x12)}
_HUGE_FLAGS = int(PageFlag.HUGE)
_ANON_HUGE = int(PageFlag.HUGE | PageFlag.ANON | PageFlag.UPTODATE)
_FILE_HUGE = int(PageFlag.HUGE | PageFlag.FILE | PageFlag.UPTODATE)


@dataclass
class HState:
    """struct hstate for one huge page size (see the module docstring)."""

    name: str  # "2M" or "1G"
    shift: int  # huge_page_shift(): 21 or 30
    nr_huge_pages: int = 0
    free: list[int] = field(default_factory=list)  # head pfns; the end is the list head
    resv_huge_pages: int = 0
    surplus_huge_pages: int = 0
    nr_overcommit_huge_pages: int = 0
    in_use: set[int] = field(default_factory=set)  # pool pages handed out (not free)
    surplus: set[int] = field(default_factory=set)  # which pages are surplus (model's view)

    @property
    def order(self) -> int:
        return self.shift - PAGE_SHIFT

    @property
    def size(self) -> int:
        return 1 << self.shift

    @property
    def free_huge_pages(self) -> int:
        return len(self.free)

    @property
    def level(self) -> int:
        """The page-table level of its leaves: PMD for 2 MiB, PUD for 1 GiB."""
        return PMD_LEVEL if self.shift == 21 else PUD_LEVEL

    @property
    def persistent(self) -> int:
        """persistent_huge_pages(): the pool without its surplus (nr_hugepages)."""
        return self.nr_huge_pages - self.surplus_huge_pages


@dataclass(eq=False)
class HugetlbFile:
    """The hugetlbfs side of one inode: its page cache and its reservation map."""

    hstate: HState
    pages: dict[int, int] = field(default_factory=dict)  # huge page index -> head pfn
    resv: set[int] = field(default_factory=set)  # inode resv_map: reserved indices
    shm: bool = False  # S_PRIVATE (SHM_HUGETLB): reserved at shmget, not at each mmap


class Hugetlb:
    """Every hstate of one machine, the hugetlbfs files and the private reservations."""

    def __init__(self) -> None:
        self.hstates = {name: HState(name, shift) for name, shift in HSTATE_SIZES.items()}
        self.default = self.hstates["2M"]  # default_hstate: Hugepagesize 2048 kB here
        self.files: dict[Inode, HugetlbFile] = {}
        # HPAGE_RESV_OWNER reservations of private mappings: (mm serial, file) -> indices
        # still reserved
        self.private: dict[tuple[int, OpenFile], set[int]] = {}

    def by_shift(self, shift: int) -> HState:
        return next(h for h in self.hstates.values() if h.shift == shift)

    def meminfo_rows(self) -> list[tuple[str, str]]:
        """hugetlb_report_meminfo(): the default hstate's counters, then Hugetlb: the
        memory of every pool in kB (label, already formatted value)."""
        h = self.default
        total = sum(s.nr_huge_pages << s.shift for s in self.hstates.values())
        return [
            ("HugePages_Total:", f"   {h.nr_huge_pages:5d}"),
            ("HugePages_Free:", f"    {h.free_huge_pages:5d}"),
            ("HugePages_Rsvd:", f"    {h.resv_huge_pages:5d}"),
            ("HugePages_Surp:", f"    {h.surplus_huge_pages:5d}"),
            ("Hugepagesize:", f"   {h.size >> 10:8d} kB"),
            ("Hugetlb:", f"        {total >> 10:8d} kB"),
        ]

    def check(self, mem: Kernel) -> None:
        """Assert the invariants of the module docstring (tests only)."""
        frames = mem.frames
        for h in self.hstates.values():
            assert 0 <= h.resv_huge_pages <= len(h.free), f"{h.name}: Rsvd > Free"
            assert 0 <= h.surplus_huge_pages <= h.nr_huge_pages, f"{h.name}: Surp > Total"
            assert h.surplus_huge_pages == len(h.surplus), f"{h.name}: surplus count"
            assert not set(h.free) & h.in_use, f"{h.name}: a page both free and in use"
            assert len(set(h.free)) == len(h.free), f"{h.name}: a page twice on the free list"
            assert h.nr_huge_pages == len(h.free) + len(h.in_use), f"{h.name}: pages lost"
            for pfn in [*h.free, *h.in_use]:
                assert frames.order(pfn) == h.order, f"pfn {pfn:#x}: not of order {h.order}"
                assert frames.flags(pfn) & _HUGE_FLAGS, f"pfn {pfn:#x}: PG_hugetlb clear"
            for pfn in h.free:
                assert frames.refcount(pfn) == 1 and frames.mapcount(pfn) == 0, (
                    f"free huge page {pfn:#x} is in use"
                )


def hstate_sizelog(hugetlb: Hugetlb, page_size_log: int) -> HState | None:
    """hstate_sizelog(): 0 is the default size; otherwise the hstate of 2**log bytes."""
    if not page_size_log:
        return hugetlb.default
    for h in hugetlb.hstates.values():
        if h.shift == page_size_log:
            return h
    return None


# ------------------------------------------------------------------ the pool
def _alloc_fresh(mem: Kernel, h: HState) -> int | None:
    """alloc_fresh_hugetlb_folio(): a new pool page from the buddy allocator, or None. A
    2 MiB page needs free memory above the min watermark after it and a free block of its
    order, which direct compaction may make (__GFP_RETRY_MAYFAIL); reclaim is not tried
    in the model. A 1 GiB page needs a free aligned run (alloc_contig_pages())."""
    gigantic = h.order > MAX_PAGE_ORDER
    if not gigantic and mem.frames.free_pages - ((1 << h.order) - 1) <= mem.node.wmark_min:
        # __zone_watermark_ok() at the min watermark: the reserve is not for the pool
        mem.vmstat["htlb_buddy_alloc_fail"] += 1
        return None
    try:
        pfn = mem.frames.alloc(_HUGE_FLAGS, h.order)
    except OutOfMemory:
        pfn = None
        # __GFP_RETRY_MAYFAIL: direct compaction, then one more try
        if not gigantic and try_to_compact_pages(mem, h.order):
            try:
                pfn = mem.frames.alloc(_HUGE_FLAGS, h.order)
            except OutOfMemory:
                pfn = None
    if not gigantic:  # alloc_buddy_hugetlb_folio()
        mem.vmstat["htlb_buddy_alloc_success" if pfn is not None else "htlb_buddy_alloc_fail"] += 1
    if pfn is None:
        return None
    h.nr_huge_pages += 1
    return pfn


def _free_to_buddy(mem: Kernel, h: HState, pfn: int) -> None:
    """update_and_free_hugetlb_folio(): a page leaves the pool for the buddy allocator."""
    h.nr_huge_pages -= 1
    if pfn in h.surplus:
        h.surplus.discard(pfn)
        h.surplus_huge_pages -= 1
    mem.frames.put(pfn)


def set_max_huge_pages(mem: Kernel, h: HState, count: int) -> None:
    """set_max_huge_pages(): what writing ``count`` to nr_hugepages does. Surplus pages
    become persistent first; then fresh pages are allocated while the buddy allocator has
    blocks of the order; shrinking frees free pages beyond the reservations and turns the
    pages still in use into surplus."""
    if count < 0:
        raise ValueError(f"nr_hugepages must be >= 0, got {count}")
    hugetlb = mem.hugetlb
    assert hugetlb is not None
    while h.surplus_huge_pages and count > h.persistent:  # adjust_pool_surplus(-1)
        # any surplus page will do: which one is surplus is a count in the kernel
        h.surplus.pop()
        h.surplus_huge_pages -= 1
    while count > h.persistent:
        pfn = _alloc_fresh(mem, h)
        if pfn is None:
            break
        h.free.append(pfn)
    min_count = max(count, h.resv_huge_pages + h.nr_huge_pages - len(h.free))
    while min_count < h.persistent and h.free:  # remove_pool_hugetlb_folio()
        pfn = h.free.pop(0)
        _free_to_buddy(mem, h, pfn)
    while count < h.persistent:  # adjust_pool_surplus(+1): in-use pages become surplus
        candidates = h.in_use - h.surplus
        if not candidates:
            break
        h.surplus.add(min(candidates))
        h.surplus_huge_pages += 1


def _alloc_surplus(mem: Kernel, h: HState) -> int | None:
    """alloc_surplus_hugetlb_folio(): a page beyond nr_hugepages while the surplus stays
    within nr_overcommit_hugepages."""
    if h.surplus_huge_pages >= h.nr_overcommit_huge_pages:
        return None
    pfn = _alloc_fresh(mem, h)
    if pfn is None:
        return None
    h.surplus.add(pfn)
    h.surplus_huge_pages += 1
    return pfn


def hugetlb_acct_memory(mem: Kernel, h: HState, delta: int) -> bool:
    """hugetlb_acct_memory(): reserve ``delta`` pages (gather_surplus_pages() allocates
    surplus pages for what the free pages cannot cover), or give back ``-delta``
    (return_unused_surplus_pages()). False: the reservation cannot be made (ENOMEM)."""
    if delta > 0:
        needed = h.resv_huge_pages + delta - len(h.free)
        if needed > 0:  # gather_surplus_pages()
            got: list[int] = []
            for _ in range(needed):
                pfn = _alloc_surplus(mem, h)
                if pfn is None:
                    for p in got:
                        _free_to_buddy(mem, h, p)
                    return False
                got.append(pfn)
            h.free.extend(got)
        h.resv_huge_pages += delta
        return True
    if delta < 0:  # return_unused_surplus_pages()
        h.resv_huge_pages += delta
        nr = min(-delta, h.surplus_huge_pages)
        for pfn in [p for p in reversed(h.free) if p in h.surplus][:nr]:
            h.free.remove(pfn)
            _free_to_buddy(mem, h, pfn)
    return True


def _alloc_hugetlb_folio(mem: Kernel, h: HState, reserved: bool) -> int | None:
    """alloc_hugetlb_folio(): a pool page for a fault. With a reservation it is taken from
    the free pages and the reservation is consumed; without one only a free page nobody has
    reserved will do (dequeue_hugetlb_folio_vma()), else a surplus page. None: -ENOSPC."""
    if reserved:
        pfn = h.free.pop()
        h.resv_huge_pages -= 1
    elif len(h.free) > h.resv_huge_pages:
        pfn = h.free.pop()
    else:
        surplus = _alloc_surplus(mem, h)
        if surplus is None:
            return None
        pfn = surplus
    h.in_use.add(pfn)
    return pfn


def _free_huge_folio(mem: Kernel, h: HState, pfn: int) -> None:
    """free_huge_folio(): the last user let go; a surplus page goes back to the buddy
    allocator, any other to the free list (contents dropped: the next user sees zeros)."""
    h.in_use.discard(pfn)
    frames = mem.frames
    frames.clear_flags(pfn, int(PageFlag.ANON | PageFlag.FILE | PageFlag.DIRTY))
    if pfn in h.surplus:
        h.nr_huge_pages -= 1
        h.surplus.discard(pfn)
        h.surplus_huge_pages -= 1
        frames.put(pfn)
        return
    frames.zero_range(pfn, 1 << h.order)
    h.free.append(pfn)


def _put(mem: Kernel, h: HState, pfn: int) -> None:
    """folio_put() of a hugetlb folio: the pool's own reference never goes, so the folio
    is free once only it is left."""
    frames = mem.frames
    frames.put(pfn)
    if frames.refcount(pfn) == 1:
        _free_huge_folio(mem, h, pfn)


# ------------------------------------------------------------------- files
def hugetlb_file_setup(
    mem: Kernel, name: str, size: int, h: HState, ino: int, *, shm: bool = False
) -> OpenFile:
    """hugetlb_file_setup() / hugetlbfs_get_inode(): an unlinked file on the hstate's
    internal mount (``/anon_hugepage`` for MAP_HUGETLB, ``/memfd:NAME`` for memfd_create);
    no reservation (VM_NORESERVE): the mmap makes it."""
    hugetlb = mem.hugetlb
    assert hugetlb is not None
    inode = Inode(
        name, dev=_HUGETLBFS_DEV[h.shift], ino=ino, size=size, deleted=True, huge_shift=h.shift
    )
    hugetlb.files[inode] = HugetlbFile(h, shm=shm)
    return OpenFile(inode)


def hugetlb_reserve_file(mem: Kernel, inode: Inode, nr: int) -> bool:
    """hugetlb_reserve_pages(inode, 0, nr, NULL, ...) of SHM_HUGETLB: the file's first
    ``nr`` huge pages are reserved in its map (False: the pool cannot: ENOMEM)."""
    hugetlb = mem.hugetlb
    assert hugetlb is not None
    hf = hugetlb.files[inode]
    if not hugetlb_acct_memory(mem, hf.hstate, nr):
        return False
    hf.resv.update(range(nr))
    return True


def hugetlbfs_file_mmap(
    mm: AddressSpace, file: OpenFile, length: int, vm_flags: int, pgoff: int
) -> int:
    """hugetlbfs_file_mmap(): the VMA becomes VM_HUGETLB | VM_DONTEXPAND; a file offset
    that is not huge page aligned is EINVAL; hugetlb_reserve_pages() reserves the pages
    (shared: the file's indices not yet reserved; private: all of them, owned by this
    mapping) unless VM_NORESERVE; ENOMEM if the pool cannot. Returns the new vm_flags."""
    mem = mm.mem
    hugetlb = mem.hugetlb
    assert hugetlb is not None
    hf = hugetlb.files[file.inode]
    h = hf.hstate
    vm_flags |= VM_HUGETLB | VM_DONTEXPAND
    if pgoff & ((h.size >> PAGE_SHIFT) - 1):
        raise oserror(errno.EINVAL)
    first = pgoff >> h.order
    last = first + (length >> h.shift)
    if not vm_flags & VM_NORESERVE and not hf.shm:  # S_PRIVATE: reserved at shmget()
        if vm_flags & VM_MAYSHARE:
            need = [i for i in range(first, last) if i not in hf.resv]  # region_chg()
            if not hugetlb_acct_memory(mem, h, len(need)):
                raise oserror(errno.ENOMEM)
            hf.resv.update(need)  # region_add()
        else:
            if not hugetlb_acct_memory(mem, h, last - first):
                raise oserror(errno.ENOMEM)
            owned = hugetlb.private.setdefault((mm.serial, file), set())
            owned.update(range(first, last))
    end = (pgoff << PAGE_SHIFT) + length
    if vm_flags & VM_WRITE and file.inode.size < end:  # i_size_write()
        file.inode.size = end
    return vm_flags


def hugetlb_vmtruncate(mem: Kernel, inode: Inode, size: int) -> None:
    """hugetlbfs_setattr() -> hugetlb_vmtruncate(): a size that is not a multiple of the
    huge page size is EINVAL; shrinking unmaps the pages past the end from every mapping
    of the file (private copies too: hugetlb_vmdelete_list()), then drops them from the
    page cache with their reservations (remove_inode_hugepages())."""
    hugetlb = mem.hugetlb
    assert hugetlb is not None
    hf = hugetlb.files[inode]
    h = hf.hstate
    if size & (h.size - 1):
        raise oserror(errno.EINVAL)
    old = inode.size
    inode.size = size
    if size >= old:
        return
    keep = size >> h.shift
    for mm in list(mem.mms.values()):
        for v in list(mm.tree):
            if v.file is None or v.file.inode is not inode:
                continue
            lo = max(v.start, v.start + ((keep << h.shift) - (v.pgoff << PAGE_SHIFT)))
            if lo < v.end:
                unmap_hugepage_range(mm, v, lo, v.end, close=False)
    remove_inode_hugepages(mem, inode, keep)


def remove_inode_hugepages(mem: Kernel, inode: Inode, first: int) -> None:
    """remove_inode_hugepages() + hugetlb_unreserve_pages(): the page cache from index
    ``first`` on leaves (each page's cache reference goes), and the reservations there
    that were never consumed are given back."""
    hugetlb = mem.hugetlb
    assert hugetlb is not None
    hf = hugetlb.files.get(inode)
    if hf is None:
        return
    h = hf.hstate
    freed = 0
    for idx in sorted(i for i in hf.pages if i >= first):
        _put(mem, h, hf.pages.pop(idx))
        freed += 1
    # region_del(): every index with a page is in the map too (the fault commits it)
    doomed = {i for i in hf.resv if i >= first}
    hf.resv -= doomed
    if len(doomed) > freed:
        hugetlb_acct_memory(mem, h, freed - len(doomed))


def release_file(mem: Kernel, inode: Inode) -> None:
    """hugetlbfs_evict_inode(): the last reference to an unlinked file went: every page
    and every reservation of it goes."""
    hugetlb = mem.hugetlb
    if hugetlb is None or inode not in hugetlb.files:
        return
    remove_inode_hugepages(mem, inode, 0)
    del hugetlb.files[inode]


# ------------------------------------------------------------------- faults
def _hstate_of(mem: Kernel, vma: Vma) -> tuple[Hugetlb, HugetlbFile]:
    hugetlb = mem.hugetlb
    assert hugetlb is not None and vma.file is not None
    return hugetlb, hugetlb.files[vma.file.inode]


def _index(vma: Vma, haddr: int, h: HState) -> int:
    """vma_hugecache_offset(): the huge page index in the file that ``haddr`` maps."""
    return ((haddr - vma.start) >> h.shift) + (vma.pgoff >> h.order)


def _make_huge_pte(vma: Vma, pfn: int, writable: bool) -> int:
    """make_huge_pte(): the VMA's protection, young, PS; writable ones are dirty too."""
    prot = page_prot(vma) | PAGE_ACCESSED
    if writable:
        prot |= PAGE_RW | PAGE_DIRTY
    else:
        prot &= ~PAGE_RW
    return pfn_pte(pfn, prot) | PAGE_PSE


def _map(mm: AddressSpace, haddr: int, pfn: int, entry: int, level: int) -> None:
    """set_huge_pte_at() + hugetlb_add_*_rmap(): one more mapping of the folio."""
    mem = mm.mem
    mem.frames.get(pfn)
    mem.frames.map(pfn)
    rmap_add(mem, pfn, mm, haddr)
    mm.pt.set(haddr, entry, level)


def _unmap(mm: AddressSpace, h: HState, haddr: int, pfn: int) -> None:
    """One mapping of the folio goes (hugetlb_remove_rmap() + its reference)."""
    mem = mm.mem
    mem.frames.unmap(pfn)
    rmap_remove(mem, pfn, mm, haddr)
    _put(mem, h, pfn)


def hugetlb_fault(mm: AddressSpace, vma: Vma, addr: int, write: bool) -> str:
    """hugetlb_fault(): the access to ``addr`` in a VM_HUGETLB VMA (the caller checked the
    VMA allows it). A missing entry is hugetlb_no_page(), a write to a read-only one
    hugetlb_wp(), anything else only sets accessed/dirty. Returns the fault kind ("anon",
    "file", "cow", "reuse", "spurious"); raises BusError (SIGBUS) when the pool has no page
    for it or the file is shorter than the offset."""
    mem = mm.mem
    _, hf = _hstate_of(mem, vma)
    h = hf.hstate
    haddr = addr & ~(h.size - 1)
    mm.pt.prealloc(haddr, h.level)
    leaf = mm.pt.get(haddr)
    entry = leaf.entry if leaf is not None else 0
    if not entry:
        return _hugetlb_no_page(mm, vma, haddr, write, addr)
    if write and not entry & PAGE_RW:
        return _hugetlb_wp(mm, vma, haddr, entry, addr)
    new = entry | PAGE_ACCESSED | (PAGE_DIRTY if write else 0)
    if new != entry:
        mm.pt.set(haddr, new, h.level)
    return "spurious"


def _hugetlb_no_page(mm: AddressSpace, vma: Vma, haddr: int, write: bool, addr: int) -> str:
    mem = mm.mem
    hugetlb, hf = _hstate_of(mem, vma)
    h = hf.hstate
    assert vma.file is not None
    inode = vma.file.inode
    idx = _index(vma, haddr, h)
    shared = bool(vma.flags & VM_MAYSHARE)
    pfn = hf.pages.get(idx)
    if pfn is None:
        if idx >= inode.size >> h.shift:  # beyond i_size: VM_FAULT_SIGBUS
            raise BusError(addr)
        if shared:
            # vma_needs_reservation(): the inode's map has the index (VM_NORESERVE or not)
            reserved = idx in hf.resv
        else:
            owned = hugetlb.private.get((mm.serial, vma.file))
            reserved = not vma.flags & VM_NORESERVE and owned is not None and idx in owned
        pfn = _alloc_hugetlb_folio(mem, h, reserved)
        if pfn is None:
            raise BusError(addr)
        mem.frames.zero_range(pfn, 1 << h.order)
        if shared:
            mem.frames.set_flags(pfn, _FILE_HUGE)
            hf.pages[idx] = pfn  # hugetlb_add_to_page_cache(): the cache's reference
            mem.frames.get(pfn)
            hf.resv.add(idx)  # vma_commit_reservation(): region_add()
            _map(mm, haddr, pfn, _make_huge_pte(vma, pfn, bool(vma.flags & VM_SHARED)), h.level)
            return "file"
        if owned is not None:
            owned.discard(idx)  # vma_commit_reservation(): the reservation is consumed
        mm.anon_vma_prepare(vma)
        mem.frames.set_flags(pfn, _ANON_HUGE)
        # a private page is mapped read-only, and a write fault reuses it at once
        # (hugetlb_no_page() -> hugetlb_wp() of an exclusive anonymous folio)
        _map(mm, haddr, pfn, _make_huge_pte(vma, pfn, write), h.level)
        return "anon"
    # in the page cache already: a shared mapping maps it, a private one maps it
    # read-only and copies it on a write
    _map(mm, haddr, pfn, _make_huge_pte(vma, pfn, shared and bool(vma.flags & VM_SHARED)), h.level)
    if write and not shared:
        leaf = mm.pt.get(haddr)
        assert leaf is not None
        return _hugetlb_wp(mm, vma, haddr, leaf.entry, addr)
    return "file"


def _hugetlb_wp(mm: AddressSpace, vma: Vma, haddr: int, entry: int, addr: int) -> str:
    """hugetlb_wp(): a write to a read-only entry of a private mapping. An anonymous folio
    mapped once is made writable (reuse); otherwise a new page gets a copy (from the
    mapping's reservation if it still holds one for the index)."""
    mem = mm.mem
    hugetlb, hf = _hstate_of(mem, vma)
    h = hf.hstate
    frames = mem.frames
    old = entry_pfn(entry)
    if frames.flags(old) & PageFlag.ANON and frames.mapcount(old) == 1:
        mm.pt.set(haddr, entry | PAGE_RW | PAGE_DIRTY | PAGE_ACCESSED, h.level)
        return "reuse"
    assert vma.file is not None
    idx = _index(vma, haddr, h)
    owned = hugetlb.private.get((mm.serial, vma.file))
    reserved = not vma.flags & VM_NORESERVE and owned is not None and idx in owned
    new = _alloc_hugetlb_folio(mem, h, reserved)
    if new is None:
        raise BusError(addr)
    if owned is not None:
        owned.discard(idx)
    frames.copy_frames(old, new, 1 << h.order)
    frames.set_flags(new, _ANON_HUGE)
    mm.anon_vma_prepare(vma)
    mm.pt.set(haddr, 0, h.level)
    mem.cpu.flush_range(mm, haddr, haddr + h.size)
    _unmap(mm, h, haddr, old)
    _map(mm, haddr, new, _make_huge_pte(vma, new, True), h.level)
    return "cow"


# --------------------------------------------------------- unmapping and fork
def unmap_hugepage_range(mm: AddressSpace, vma: Vma, start: int, end: int, close: bool) -> None:
    """__unmap_hugepage_range(): clear the huge entries of ``[start, end)`` (the caller keeps
    them huge page aligned), drop their mappings, flush the TLB; with ``close`` the VMA
    goes away too (hugetlb_vm_op_close()): the private reservations it still holds for
    the range are given back."""
    mem = mm.mem
    hugetlb, hf = _hstate_of(mem, vma)
    h = hf.hstate
    if mm.pt_used:
        cleared = False
        for haddr in range(start, end, h.size):
            leaf = mm.pt.get(haddr)
            if leaf is None or not leaf.entry:
                continue
            e = mm.pt.set(haddr, 0, h.level)
            cleared = True
            if present(e):
                _unmap(mm, h, haddr, entry_pfn(e))
        if cleared:
            mem.cpu.flush_range(mm, start, end)
    if close and not vma.flags & VM_MAYSHARE:
        assert vma.file is not None
        owned = hugetlb.private.get((mm.serial, vma.file))
        if owned:
            lo, hi = _index(vma, start, h), _index(vma, end, h)
            unused = {i for i in owned if lo <= i < hi}
            if unused:
                owned -= unused
                hugetlb_acct_memory(mem, h, -len(unused))


def copy_hugetlb_page_range(dst: AddressSpace, src: AddressSpace, vma: Vma) -> None:
    """copy_hugetlb_page_range(): fork shares every huge page with the child; in a private
    writable mapping both sides lose write permission (COW). The child owns no
    reservation (its faults take from the free pool)."""
    if not src.pt_used:
        return
    mem = src.mem
    _, hf = _hstate_of(mem, vma)
    h = hf.hstate
    cow = is_cow_mapping(vma.flags)
    for haddr in range(vma.start, vma.end, h.size):
        leaf = src.pt.get(haddr)
        if leaf is None or not leaf.entry:
            continue
        e = leaf.entry
        pfn = entry_pfn(e)
        if cow and e & PAGE_RW:
            e &= ~PAGE_RW
            src.pt.set(haddr, e, h.level)
        dst.pt.prealloc(haddr, h.level)
        _map(dst, haddr, pfn, e, h.level)


def hugetlb_change_protection(mm: AddressSpace, vma: Vma, start: int, end: int) -> int:
    """hugetlb_change_protection(): every huge entry of ``[start, end)`` takes the VMA's new
    protection (huge_pte_modify(): accessed and dirty stay); a private writable mapping's
    entries stay read-only until their write fault (vm_page_prot has no write there).
    Returns the entries changed; the TLB is flushed for the range."""
    if not mm.pt_used or start >= end:
        return 0
    _, hf = _hstate_of(mm.mem, vma)
    h = hf.hstate
    prot = page_prot(vma)
    changed = 0
    for haddr in range(start, end, h.size):
        leaf = mm.pt.get(haddr)
        if leaf is None or not present(leaf.entry):
            continue
        e = leaf.entry
        new = pfn_pte(entry_pfn(e), prot) | PAGE_PSE | (e & (PAGE_ACCESSED | PAGE_DIRTY))
        if new != e:
            mm.pt.set(haddr, new, h.level)
            changed += 1
    if changed:
        mm.mem.cpu.flush_range(mm, start, end)
    return changed
