"""madvise(2): mm/madvise.c of Linux 6.18.

Advice that changes ``vm_flags`` goes through ``vma_modify`` (and so can split, and fail at
the map_count limit, which madvise reports as EAGAIN); the rest acts on pages only.
"""

from __future__ import annotations

import errno

from vmsim.constants import (
    MADV_COLD,
    MADV_COLLAPSE,
    MADV_DODUMP,
    MADV_DOFORK,
    MADV_DONTDUMP,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_DONTNEED_LOCKED,
    MADV_FREE,
    MADV_GUARD_INSTALL,
    MADV_GUARD_REMOVE,
    MADV_HUGEPAGE,
    MADV_HWPOISON,
    MADV_KEEPONFORK,
    MADV_MERGEABLE,
    MADV_NOHUGEPAGE,
    MADV_NORMAL,
    MADV_PAGEOUT,
    MADV_POPULATE_READ,
    MADV_POPULATE_WRITE,
    MADV_RANDOM,
    MADV_REMOVE,
    MADV_SEQUENTIAL,
    MADV_SOFT_OFFLINE,
    MADV_UNMERGEABLE,
    MADV_WILLNEED,
    MADV_WIPEONFORK,
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SIZE,
)
from vmsim.errors import BusError, Segfault, oserror
from vmsim.hw.pte import PAGE_ACCESSED, PAGE_DIRTY
from vmsim.mm import gup, huge_memory, hugetlb, khugepaged, lru, memory, truncate, vmscan
from vmsim.mm.core import U64, AddressSpace, page_align
from vmsim.mm.flags import (
    VM_DONTCOPY,
    VM_DONTDUMP,
    VM_DROPPABLE,
    VM_HUGEPAGE,
    VM_HUGETLB,
    VM_IO,
    VM_LOCKED,
    VM_MAYBE_GUARD,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_MERGEABLE,
    VM_NOHUGEPAGE,
    VM_PFNMAP,
    VM_RAND_READ,
    VM_SEALED,
    VM_SEQ_READ,
    VM_SHARED,
    VM_SPECIAL,
    VM_WIPEONFORK,
    VM_WRITE,
)
from vmsim.mm.internal import entry_pfn, present
from vmsim.mm.vma import Vma
from vmsim.phys.frames import OutOfMemory, PageFlag

VALID_ADVICE = frozenset(
    {
        MADV_NORMAL,
        MADV_RANDOM,
        MADV_SEQUENTIAL,
        MADV_WILLNEED,
        MADV_DONTNEED,
        MADV_DONTNEED_LOCKED,
        MADV_FREE,
        MADV_COLD,
        MADV_PAGEOUT,
        MADV_POPULATE_READ,
        MADV_POPULATE_WRITE,
        MADV_REMOVE,
        MADV_DONTFORK,
        MADV_DOFORK,
        MADV_DONTDUMP,
        MADV_DODUMP,
        MADV_WIPEONFORK,
        MADV_KEEPONFORK,
        MADV_GUARD_INSTALL,
        MADV_GUARD_REMOVE,
        MADV_MERGEABLE,
        MADV_UNMERGEABLE,
        MADV_HUGEPAGE,
        MADV_NOHUGEPAGE,
        MADV_COLLAPSE,
    }
)
# is_discard(): advice a sealed read-only anonymous VMA refuses
_DISCARD = frozenset(
    {
        MADV_FREE,
        MADV_DONTNEED,
        MADV_DONTNEED_LOCKED,
        MADV_REMOVE,
        MADV_DONTFORK,
        MADV_WIPEONFORK,
        MADV_GUARD_INSTALL,
    }
)


def do_madvise(mm: AddressSpace, start: int, len_in: int, behavior: int) -> None:
    """do_madvise(): validate, then walk the VMAs; holes give ENOMEM at the end, after the
    advice was applied to every mapped part."""
    if behavior in (MADV_HWPOISON, MADV_SOFT_OFFLINE):
        # memory-failure injection would poison real frames; not modelled
        raise oserror(errno.EINVAL)
    if behavior not in VALID_ADVICE:
        raise oserror(errno.EINVAL)
    if start & (PAGE_SIZE - 1):
        raise oserror(errno.EINVAL)
    length = page_align(len_in)
    if len_in and not length:
        raise oserror(errno.EINVAL)
    end = start + length
    if end > U64:
        raise oserror(errno.EINVAL)
    if end == start:
        return
    if behavior in (MADV_POPULATE_READ, MADV_POPULATE_WRITE):
        _madvise_populate(mm, start, end, behavior == MADV_POPULATE_WRITE)
        return
    tree = mm.tree
    unmapped_error = 0
    vma = tree.find(start)
    while True:
        if vma is None:
            raise oserror(errno.ENOMEM)
        if start < vma.start:
            unmapped_error = errno.ENOMEM
            start = vma.start
            if start >= end:
                break
        rend = min(vma.end, end)
        vma = _madvise_vma(mm, vma, start, rend, behavior)
        if rend < vma.end:
            rend = vma.end
        start = rend
        if start >= end:
            break
        vma = tree.next(vma)
    if unmapped_error:
        raise oserror(unmapped_error)


def _is_ro_anon(vma: Vma) -> bool:
    return vma.file is None and not (vma.flags & VM_SHARED) and not (vma.flags & VM_WRITE)


def _madvise_vma(mm: AddressSpace, vma: Vma, start: int, end: int, behavior: int) -> Vma:
    """madvise_vma_behavior() for one VMA piece ``[start, end)``; returns the VMA the walk
    continues after."""
    if vma.flags & VM_SEALED and behavior in _DISCARD and _is_ro_anon(vma):
        raise oserror(errno.EPERM)
    flags = vma.flags
    new = flags
    if behavior == MADV_REMOVE:
        if flags & VM_LOCKED:
            raise oserror(errno.EINVAL)
        if vma.file is None:
            raise oserror(errno.EINVAL)
        if not (flags & VM_SHARED and flags & VM_MAYWRITE):
            raise oserror(errno.EACCES)
        inode = vma.file.inode
        first, last = vma.pgoff_at(start), vma.pgoff_at(end)
        # shmem_fallocate(PUNCH_HOLE): unmap (private copies stay), then drop the pages
        memory.unmap_mapping_pages(list(mm.mem.mms.values()), inode, first, last, even_cows=False)
        truncate.drop_cache_pages(mm.mem, inode, first, last)
        return vma
    if behavior == MADV_WILLNEED:
        return vma
    if behavior in (MADV_COLD, MADV_PAGEOUT):
        if flags & (VM_LOCKED | VM_PFNMAP | VM_HUGETLB):
            raise oserror(errno.EINVAL)
        cold_or_pageout(mm, start, end, behavior == MADV_PAGEOUT)
        return vma
    if behavior in (MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_FREE):
        forbidden = VM_PFNMAP
        if behavior != MADV_DONTNEED_LOCKED:
            forbidden |= VM_LOCKED
        if flags & forbidden:
            raise oserror(errno.EINVAL)
        if flags & VM_HUGETLB:
            # madvise_dontneed_free_valid_vma(): DONTNEED only, from a huge page boundary,
            # the end rounded up to the huge page size
            assert vma.file is not None
            size = 1 << vma.file.inode.huge_shift
            if behavior == MADV_FREE or start & (size - 1):
                raise oserror(errno.EINVAL)
            end = (end + size - 1) & ~(size - 1)
            hugetlb.unmap_hugepage_range(mm, vma, start, end, close=False)
            return vma
        if behavior == MADV_FREE:
            if not vma.is_anonymous or flags & VM_SHARED:
                raise oserror(errno.EINVAL)
            # lazily freed: contents stay until reclaim finds them still clean
            lazyfree(mm, start, end)
            return vma
        mm.zap(start, end)
        # CONFIG_PT_RECLAIM: a zap of at least 2 MiB frees the PTE tables it left empty
        # (zap_pte_range() with details->reclaim_pt)
        memory.reclaim_empty_pte_tables(mm, start, end)
        return vma
    if behavior == MADV_COLLAPSE:
        # thp_vma_allowable_order(TVA_FORCED_COLLAPSE): anonymous and spanning an aligned
        # PMD, whatever the THP sysfs mode says
        if not vma.is_anonymous or flags & (VM_SHARED | VM_SPECIAL | VM_HUGETLB):
            raise oserror(errno.EINVAL)
        haddr = (vma.end - PMD_SIZE) & ~(PMD_SIZE - 1)
        if haddr < vma.start or flags & VM_NOHUGEPAGE:
            raise oserror(errno.EINVAL)
        # madvise_collapse(): a VMA without an anon_vma has no THP orders (EINVAL); then it
        # compares the THPs made with (hend - hstart) >> PMD_SHIFT in unsigned arithmetic:
        # a range inside one PMD fails, one that only straddles a boundary succeeds with
        # nothing to do (kernel-checked)
        khugepaged.madvise_collapse(mm, vma, start, end)
        return vma
    if behavior == MADV_GUARD_INSTALL:
        if flags & (VM_SPECIAL | VM_HUGETLB | VM_LOCKED):
            raise oserror(errno.EINVAL)
        vma.flags |= VM_MAYBE_GUARD
        if vma.is_anonymous:
            mm.anon_vma_prepare(vma)
        mm.zap(start, end)
        for pg in range(start >> PAGE_SHIFT, end >> PAGE_SHIFT):
            mm.guards[pg] = True
        return vma
    if behavior == MADV_GUARD_REMOVE:
        if flags & (VM_SPECIAL | VM_HUGETLB):
            raise oserror(errno.EINVAL)
        mm.drop_guards(start, end)
        return vma
    if behavior == MADV_NORMAL:
        new = flags & ~(VM_RAND_READ | VM_SEQ_READ)
    elif behavior == MADV_SEQUENTIAL:
        new = (flags & ~VM_RAND_READ) | VM_SEQ_READ
    elif behavior == MADV_RANDOM:
        new = (flags & ~VM_SEQ_READ) | VM_RAND_READ
    elif behavior == MADV_DONTFORK:
        new = flags | VM_DONTCOPY
    elif behavior == MADV_DOFORK:
        if flags & VM_IO:
            raise oserror(errno.EINVAL)
        new = flags & ~VM_DONTCOPY
    elif behavior == MADV_WIPEONFORK:
        if vma.file is not None or flags & VM_SHARED:
            raise oserror(errno.EINVAL)
        new = flags | VM_WIPEONFORK
    elif behavior == MADV_KEEPONFORK:
        if flags & VM_DROPPABLE:
            raise oserror(errno.EINVAL)
        new = flags & ~VM_WIPEONFORK
    elif behavior == MADV_DONTDUMP:
        new = flags | VM_DONTDUMP
    elif behavior == MADV_DODUMP:
        if (flags & VM_SPECIAL and not flags & VM_HUGETLB) or flags & VM_DROPPABLE:
            raise oserror(errno.EINVAL)
        new = flags & ~VM_DONTDUMP
    elif behavior == MADV_MERGEABLE:
        # ksm_madvise(): only VMAs KSM can handle get VM_MERGEABLE (the mm joins ksmd's
        # list, __ksm_enter()); others are left as is
        ksm = mm.mem.ksm
        if ksm is not None:
            if ksm.madvise_mergeable(mm, vma):
                new = flags | VM_MERGEABLE
        elif not flags & (VM_SHARED | VM_MAYSHARE | VM_SPECIAL | VM_HUGETLB | VM_DROPPABLE):
            new = flags | VM_MERGEABLE
    elif behavior == MADV_UNMERGEABLE:
        new = flags & ~VM_MERGEABLE
        if flags & VM_MERGEABLE and mm.mem.ksm is not None:
            mm.mem.ksm.unmerge(mm, start, end)
    elif behavior == MADV_HUGEPAGE:
        new = (flags & ~VM_NOHUGEPAGE) | VM_HUGEPAGE
    elif behavior == MADV_NOHUGEPAGE:
        new = (flags & ~VM_HUGEPAGE) | VM_NOHUGEPAGE
    if new == flags:
        return vma
    try:
        return mm.vma_modify(vma, start, end, new)
    except OSError as e:
        if e.errno == errno.ENOMEM:
            raise oserror(errno.EAGAIN) from None
        raise


def _madvise_populate(mm: AddressSpace, start: int, end: int, write: bool) -> None:
    """madvise_populate(): fault every page in like a user access would (with FOLL_WRITE for
    POPULATE_WRITE); holes give ENOMEM, inaccessible VMAs EINVAL, SIGBUS/guards EFAULT."""
    tree = mm.tree
    addr = start
    while addr < end:
        vma = tree.lookup(addr)
        if vma is None:
            raise oserror(errno.ENOMEM)
        if vma.flags & (VM_IO | VM_PFNMAP):
            raise oserror(errno.EINVAL)
        access = VM_WRITE if write else 0x1
        if not (vma.flags & access):
            raise oserror(errno.EINVAL)
        nend = min(end, vma.end)
        a = addr
        try:
            while a < nend:
                pfn = mm.follow_page(a, write, force=False)
                if pfn is None:
                    memory.handle_mm_fault(mm, vma, a, write)
                    pfn = mm.follow_page(a, write, force=False)
                if pfn is not None:
                    gup.gup_touch(mm, a, pfn, write)
                a += PAGE_SIZE
        except (BusError, Segfault):
            raise oserror(errno.EFAULT) from None
        except OutOfMemory:
            raise oserror(errno.ENOMEM) from None
        addr = nend


# folio flags of the PTE walks below
_ANON = int(PageFlag.ANON)
_HEAD = int(PageFlag.HEAD)
_DIRTY = int(PageFlag.DIRTY)
_MLOCKED = int(PageFlag.MLOCKED)
_SWAPBACKED = int(PageFlag.SWAPBACKED)
_REFERENCED = int(PageFlag.REFERENCED)
_ACTIVE = int(PageFlag.ACTIVE)


def lazyfree(mm: AddressSpace, start: int, end: int) -> None:
    """madvise_free_pte_range(): every anonymous page's PTE becomes clean and old; a dirty
    folio is cleaned only if mapped once (a shared one is skipped whole); then
    folio_mark_lazyfree() drops PG_swapbacked (and active, referenced) unless the folio is
    mlocked (unevictable): reclaim may then free it without swapping, until it is written
    again."""
    if not mm.pt_used or start >= end:
        return
    huge_memory.madvise_thp(mm, start, end, "free")
    frames = mm.mem.frames
    zero = frames.zero_pfn
    touched = []
    for m in mm.pt.iter_leaves(start, end):
        e = m.entry
        if not present(e) or m.level > 1:
            continue
        pfn = entry_pfn(e)
        if pfn == zero or not frames.flags(pfn) & _ANON or frames.flags(pfn) & _HEAD:
            continue
        flags = frames.flags(pfn)
        if flags & _DIRTY:
            if frames.mapcount(pfn) != 1:
                continue
            frames.clear_flags(pfn, _DIRTY)
        if e & (PAGE_ACCESSED | PAGE_DIRTY):
            mm.pt.set(m.vaddr, e & ~(PAGE_ACCESSED | PAGE_DIRTY))
            touched.append(m.vaddr)
        if flags & _SWAPBACKED and not flags & _MLOCKED:
            frames.clear_flags(pfn, _SWAPBACKED | _REFERENCED | _ACTIVE)
            mm.mem.node.lru.update(pfn)
    if touched:
        mm.mem.cpu.flush_range(mm, touched[0], touched[-1] + PAGE_SIZE)


def cold_or_pageout(mm: AddressSpace, start: int, end: int, pageout: bool) -> None:
    """madvise_cold_or_pageout_pte_range(): folios mapped only here lose PG_referenced;
    MADV_COLD also ages their PTEs and moves them to the inactive list, MADV_PAGEOUT reclaims
    them at once (without swap an anonymous folio stays, activated; a clean file folio goes;
    the PTEs of what stays keep their accessed bit)."""
    if not mm.pt_used or start >= end:
        return
    mem = mm.mem
    lru.lru_add_drain(mem)  # madvise_cold() / madvise_pageout() start with it
    frames = mem.frames
    zero = frames.zero_pfn
    picked = huge_memory.madvise_thp(mm, start, end, "pageout" if pageout else "cold")
    aged: list[int] = []
    for m in list(mm.pt.iter_leaves(start, end)):
        e = m.entry
        if not present(e) or m.level > 1:  # a PMD: madvise_thp() above
            continue
        pfn = entry_pfn(e)
        if pfn == zero or frames.flags(pfn) & _HEAD:  # a large folio: madvise_thp() above
            continue
        if pfn not in mem.node.lru.where or frames.mapcount(pfn) != 1:
            continue
        if e & PAGE_ACCESSED and not pageout:  # PAGEOUT leaves the PTE young (kernel-verified)
            mm.pt.set(m.vaddr, e & ~PAGE_ACCESSED)
            aged.append(m.vaddr)
        frames.clear_flags(pfn, _REFERENCED)
        if pageout:
            picked.append(pfn)
        elif frames.flags(pfn) & _ACTIVE:
            frames.clear_flags(pfn, _ACTIVE)
            mem.node.lru.update(pfn)
            mem.vmstat["pgdeactivate"] += 1
    if aged:
        mem.cpu.flush_range(mm, aged[0], aged[-1] + PAGE_SIZE)
    if picked:
        vmscan.pageout(mem, picked)


__all__ = [
    "VALID_ADVICE",
    "cold_or_pageout",
    "do_madvise",
    "lazyfree",
]
