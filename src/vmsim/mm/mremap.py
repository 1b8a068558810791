"""mremap(2): mm/mremap.c of Linux 6.18 (shrink, grow in place, move, MREMAP_FIXED,
MREMAP_DONTUNMAP, and the 6.17 multi-VMA move)."""

from __future__ import annotations

import errno

from vmsim.constants import (
    MAP_FIXED,
    MAP_SHARED,
    MREMAP_DONTUNMAP,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PAGE_SHIFT,
    PAGE_SIZE,
)
from vmsim.errors import oserror
from vmsim.hw.pagetable import level_size
from vmsim.mm import huge_memory
from vmsim.mm.core import U64, AddressSpace, page_align
from vmsim.mm.flags import (
    VM_ACCOUNT,
    VM_DONTEXPAND,
    VM_LOCKED,
    VM_LOCKED_MASK,
    VM_MAYSHARE,
    VM_MIXEDMAP,
    VM_PFNMAP,
    VM_SEALED,
    VM_SHARED,
)
from vmsim.mm.internal import entry_pfn, present
from vmsim.mm.mmap import get_unmapped_area, placement_error
from vmsim.mm.rmap import rmap_add, rmap_remove
from vmsim.mm.vma import Vma


class _Remap:
    """struct vma_remap_struct."""

    __slots__ = ("addr", "flags", "new_addr", "new_len", "old_len", "populate_expand", "vma")

    def __init__(self, addr: int, old_len: int, new_len: int, flags: int, new_addr: int) -> None:
        self.addr = addr
        self.old_len = old_len
        self.new_len = new_len
        self.flags = flags
        self.new_addr = new_addr
        self.vma: Vma | None = None
        self.populate_expand = False

    @property
    def implies_new_addr(self) -> bool:
        return bool(self.flags & (MREMAP_FIXED | MREMAP_DONTUNMAP))


def do_mremap(
    mm: AddressSpace, addr: int, old_len: int, new_len: int, flags: int, new_addr: int
) -> int:
    """do_mremap(): returns the (new) address of the mapping."""
    vrm = _Remap(addr, page_align(old_len), page_align(new_len), flags, new_addr)
    _check_params(mm, vrm)
    if vrm.flags & MREMAP_FIXED and vrm.old_len == vrm.new_len:
        res = _remap_move(mm, vrm)
    else:
        vrm.vma = mm.tree.lookup(vrm.addr)
        _check_prep_vma(mm, vrm)
        res = _mremap_to(mm, vrm) if vrm.implies_new_addr else _mremap_at(mm, vrm)
    if vrm.populate_expand:
        mm.populate(vrm.new_addr + vrm.old_len, vrm.new_addr + vrm.new_len, ignore_errors=True)
    return res


def _check_params(mm: AddressSpace, vrm: _Remap) -> None:
    """check_mremap_params()."""
    task_size = mm.cfg.task_size
    if vrm.flags & ~(MREMAP_FIXED | MREMAP_MAYMOVE | MREMAP_DONTUNMAP):
        raise oserror(errno.EINVAL)
    if vrm.addr & (PAGE_SIZE - 1):
        raise oserror(errno.EINVAL)
    if not vrm.new_len:
        raise oserror(errno.EINVAL)
    if vrm.new_len > task_size:
        raise oserror(errno.EINVAL)
    if not vrm.implies_new_addr:
        return
    if vrm.new_addr > task_size - vrm.new_len:
        raise oserror(errno.EINVAL)
    if vrm.new_addr & (PAGE_SIZE - 1):
        raise oserror(errno.EINVAL)
    if not (vrm.flags & MREMAP_MAYMOVE):
        raise oserror(errno.EINVAL)
    if vrm.flags & MREMAP_DONTUNMAP and vrm.old_len != vrm.new_len:
        raise oserror(errno.EINVAL)
    # vrm_overlaps()
    if vrm.addr < vrm.new_addr + vrm.new_len and vrm.new_addr < vrm.addr + vrm.old_len:
        raise oserror(errno.EINVAL)
    mm.check_map_count(len(mm.tree) + 6, "check_mremap_params()")


def _check_prep_vma(mm: AddressSpace, vrm: _Remap) -> None:
    """check_prep_vma()."""
    vma = vrm.vma
    if vma is None:
        raise oserror(errno.EFAULT)
    if vma.flags & VM_SEALED:
        raise oserror(errno.EPERM)
    if vma.file is not None and vma.file.inode.huge_shift:
        # align_hugetlb(): lengths rounded up to the huge page size, addresses aligned to
        # it, and no growth (the reservation cannot be split)
        size = 1 << vma.file.inode.huge_shift
        vrm.old_len = (vrm.old_len + size - 1) & ~(size - 1)
        vrm.new_len = (vrm.new_len + size - 1) & ~(size - 1)
        if (vrm.addr | vrm.new_addr) & (size - 1) or vrm.new_len > vrm.old_len:
            raise oserror(errno.EINVAL)
    if not vrm.old_len and not (vma.flags & (VM_SHARED | VM_MAYSHARE)):
        raise oserror(errno.EINVAL)
    if vrm.flags & MREMAP_DONTUNMAP and vma.flags & (VM_DONTEXPAND | VM_MIXEDMAP):
        raise oserror(errno.EINVAL)
    if not vrm.implies_new_addr:
        vrm.new_addr = vrm.addr
    if not (vrm.new_len > vrm.old_len or vrm.implies_new_addr):
        return
    # a move that shrinks only needs [addr, addr + new_len) inside the VMA: mremap_to()
    # unmaps the rest of the old range first, across anything (Linux 6.18)
    if min(vrm.old_len, vrm.new_len) > vma.end - vrm.addr:
        raise oserror(errno.EFAULT)
    if vrm.new_len == vrm.old_len:
        return
    if vma.flags & VM_LOCKED and vrm.new_len > vrm.old_len:
        vrm.populate_expand = True
    pgoff = vma.pgoff_at(vrm.addr)
    if pgoff + (vrm.new_len >> PAGE_SHIFT) > U64:
        raise oserror(errno.EINVAL)
    if vma.flags & (VM_DONTEXPAND | VM_PFNMAP) and vrm.new_len > vrm.old_len:
        raise oserror(errno.EFAULT)
    if vrm.new_len > vrm.old_len:
        mm.may_expand_vm(vma.flags, (vrm.new_len - vrm.old_len) >> PAGE_SHIFT)


def _shrink(mm: AddressSpace, vrm: _Remap) -> None:
    """shrink_vma(): unmap the tail [addr + new_len, addr + old_len), across anything;
    do_vmi_munmap() refuses a tail that runs past TASK_SIZE (or wraps): EINVAL, nothing
    changed."""
    start, length = vrm.addr + vrm.new_len, (vrm.old_len - vrm.new_len) & U64
    task_size = mm.cfg.task_size
    if start > task_size or length > task_size - start:
        raise oserror(errno.EINVAL)
    mm.do_munmap(vrm.addr + vrm.new_len, vrm.addr + vrm.old_len)


def _mremap_at(mm: AddressSpace, vrm: _Remap) -> int:
    """mremap_at(): resize where the mapping is, moving only if it must and may."""
    if vrm.new_len == vrm.old_len:
        return vrm.addr
    if vrm.new_len < vrm.old_len:
        _shrink(mm, vrm)
        return vrm.addr
    vma = vrm.vma
    assert vma is not None
    delta = vrm.new_len - vrm.old_len
    if vma.end - vrm.addr == vrm.old_len and _expandable(mm, vma, delta):
        if vma.flags & VM_ACCOUNT and not mm.vm_enough_memory(delta >> PAGE_SHIFT):
            raise mm.commit_error(delta >> PAGE_SHIFT)
        # vma_merge_extend(): the extension merges with the VMA and maybe with next
        end = vma.end
        merged = mm.merge_new_range(
            end,
            end + delta,
            vma.flags,
            vma.file,
            vma.pgoff_at(end),
            vma,
            mm.tree.next(vma),
            src_anon=vma.anon_vma,
            src_singular=vma.anon_singular,
        )
        if merged is None:
            if vma.flags & VM_ACCOUNT:
                mm.vm_unacct(delta >> PAGE_SHIFT)
            raise oserror(errno.ENOMEM)
        if vma.flags & VM_LOCKED:
            mm.locked_vm += delta >> PAGE_SHIFT
        return vrm.addr
    if not (vrm.flags & MREMAP_MAYMOVE):
        raise oserror(errno.ENOMEM)
    _set_new_addr(mm, vrm)
    return _move_vma(mm, vrm)


def _expandable(mm: AddressSpace, vma: Vma, delta: int) -> bool:
    """vma_expandable(): nothing in the way, and the result fits below TASK_SIZE."""
    end = vma.end + delta
    if end > U64:
        return False
    if mm.tree.find_intersection(vma.end, end) is not None:
        return False
    return not end - vma.start > mm.cfg.task_size - vma.start


def _set_new_addr(mm: AddressSpace, vrm: _Remap) -> None:
    """vrm_set_new_addr(): the destination, chosen like mmap would (THP alignment included
    for private anonymous memory)."""
    vma = vrm.vma
    assert vma is not None
    map_flags = 0
    if vrm.flags & MREMAP_FIXED:
        map_flags |= MAP_FIXED
    if vma.flags & VM_MAYSHARE:
        map_flags |= MAP_SHARED
    hint = vrm.new_addr if vrm.implies_new_addr else 0
    res = get_unmapped_area(mm, vma.file, hint, vrm.new_len, vma.pgoff_at(vrm.addr), map_flags, 0)
    if res < 0:
        raise placement_error(-res, vrm.new_len)
    vrm.new_addr = res


def _mremap_to(mm: AddressSpace, vrm: _Remap) -> int:
    """mremap_to(): MREMAP_FIXED (unmap the destination first) or MREMAP_DONTUNMAP."""
    if vrm.flags & MREMAP_FIXED:
        start = vrm.new_addr
        first = mm.tree.find_intersection(start, start + vrm.new_len)
        if first is not None:
            mm.remove_vmas(mm.gather_munmap(start, start + vrm.new_len, first))
        vrm.vma = mm.tree.lookup(vrm.addr)
        if vrm.vma is None:
            raise oserror(errno.EFAULT)
    if vrm.new_len < vrm.old_len:
        _shrink(mm, vrm)
        vrm.old_len = vrm.new_len
        vrm.vma = mm.tree.lookup(vrm.addr)
        assert vrm.vma is not None
    _set_new_addr(mm, vrm)
    return _move_vma(mm, vrm)


def _move_vma(mm: AddressSpace, vrm: _Remap) -> int:
    """move_vma(): copy the VMA to the new place (merging if it can), move the pages, then
    unmap the source (or, with MREMAP_DONTUNMAP, leave it empty and unlocked)."""
    mm.check_map_count(len(mm.tree) + 4, "prep_move_vma()")
    vma = vrm.vma
    assert vma is not None
    charged = 0
    if vma.flags & VM_ACCOUNT:
        if vrm.flags & MREMAP_DONTUNMAP:
            charged = vrm.new_len >> PAGE_SHIFT
        elif vrm.new_len > vrm.old_len:
            charged = (vrm.new_len - vrm.old_len) >> PAGE_SHIFT
        if charged and not mm.vm_enough_memory(charged):
            raise mm.commit_error(charged)
    old_addr, old_len, new_addr, new_len = vrm.addr, vrm.old_len, vrm.new_addr, vrm.new_len
    old_start, old_end = vma.start, vma.end
    new_vma = _copy_vma(mm, vma, new_addr, new_len, vma.pgoff_at(old_addr))
    move_page_tables(mm, old_addr, new_addr, old_len)
    if vma.flags & VM_LOCKED:
        mm.locked_vm += new_len >> PAGE_SHIFT
    if vrm.flags & MREMAP_DONTUNMAP:
        vma.flags &= ~VM_LOCKED_MASK
        if vma.flags & VM_LOCKED:
            mm.locked_vm -= vma.pages
        if new_vma is not vma and old_addr == old_start and old_addr + old_len == old_end:
            vma.anon_vma = None
            vma.anon_singular = True
        return new_addr
    first = mm.tree.find_intersection(old_addr, old_addr + old_len) if old_len else None
    if first is not None:
        doomed = mm.gather_munmap(old_addr, old_addr + old_len, first)
        for v in doomed:  # the reservation moved with the pages: do not undo it
            if v.flags & VM_ACCOUNT:
                mm.cfg.committed_pages += v.pages
        mm.remove_vmas(doomed)
    return new_addr


def _copy_vma(mm: AddressSpace, vma: Vma, addr: int, length: int, pgoff: int) -> Vma:
    """copy_vma(): an unfaulted anonymous VMA takes the page offset of its new place."""
    if vma.is_anonymous and vma.anon_vma is None:
        pgoff = addr >> PAGE_SHIFT
    tree = mm.tree
    prev = tree.prev_of(addr)
    nxt = tree.find(addr)
    merged = mm.merge_new_range(
        addr,
        addr + length,
        vma.flags,
        vma.file,
        pgoff,
        prev,
        nxt,
        src_anon=vma.anon_vma,
        src_singular=vma.anon_singular,
    )
    if merged is not None:
        return merged
    new = vma.copy()
    new.start, new.end, new.pgoff = addr, addr + length, pgoff
    tree.insert_new(new)
    return new


def _remap_move(mm: AddressSpace, vrm: _Remap) -> int:
    """remap_move(): MREMAP_FIXED with old_len == new_len moves every VMA of the source range
    (6.17+), keeping the gaps between them; the range must start inside a VMA."""
    start = vrm.addr
    end = vrm.addr + vrm.old_len
    target = vrm.new_addr
    res: int | None = None
    seen = False
    last_end = 0
    cursor = start
    while True:
        vma = mm.tree.find(cursor)
        if seen and vma is not None and vma.start < cursor:
            # a source kept by MREMAP_DONTUNMAP: continue after it
            vma = mm.tree.next(vma)
        if vma is None or vma.start >= end:
            break
        if not seen and start < vma.start:
            raise oserror(errno.EFAULT)
        a = max(vma.start, cursor)
        length = min(end, vma.end) - a
        offset = vma.start - last_end if seen else 0
        last_end = vma.end
        # vma_multi_allowed(): anonymous, shmem and ordinary files; not special mappings
        multi_allowed = vma.name is None
        if not multi_allowed and (seen or vma.end < end):
            raise oserror(errno.EFAULT)
        sub = _Remap(a, length, length, vrm.flags, target + offset)
        sub.vma = vma
        _check_prep_vma(mm, sub)
        r = _mremap_to(mm, sub)
        if not seen:
            res = r
        if not multi_allowed:
            break
        target = r + length
        seen = True
        cursor = a + length
    if res is None:
        raise oserror(errno.EFAULT)
    return res


def move_ptes(mm: AddressSpace, old: int, new: int, length: int) -> None:
    """move_page_tables(): the entries of ``[old, old+length)`` move to ``new``, pages and
    counts untouched; the old range is flushed."""
    if not length or not mm.pt_used:
        return
    delta = new - old
    # move_page_tables(): a PMD leaf moves whole (move_huge_pmd()) when it lies inside the
    # range and lands 2 MiB aligned; otherwise it is split and its PTEs move
    whole = huge_memory.prepare_move(mm, old, old + length, delta)
    # the new page tables first (the allocation may reclaim, which must find every page
    # where its reverse map says it is)
    for m in list(mm.pt.iter_leaves(old, old + length)):
        mm.pt.prealloc(m.vaddr + delta, m.level)
    tables = mm.pt.table_pages
    moved = mm.pt.clear_range(old, old + length, free_tables=True)
    if mm.pt.table_pages != tables:
        mm.mem.cpu.pwc.flush()
    if not moved:
        return
    zero = mm.mem.frames.zero_pfn
    if whole:
        huge_memory.move_deposits(mm, whole, delta)
    huge_zero = mm.mem.thp.huge_zero_pfn
    for m in moved:
        mm.pt.set(m.vaddr + delta, m.entry, m.level)  # huge leaves stay huge
        if present(m.entry) and (pfn := entry_pfn(m.entry)) not in (zero, huge_zero):
            rmap_remove(mm.mem, pfn, mm, m.vaddr)
            rmap_add(mm.mem, pfn, mm, m.vaddr + delta)
    last = moved[-1]
    mm.mem.cpu.flush_range(mm, moved[0].vaddr, last.vaddr + level_size(last.level))


def move_page_tables(mm: AddressSpace, old: int, new: int, length: int) -> None:
    """move_page_tables(): page table entries (move_ptes()) and guard markers follow an
    mremap move."""
    move_ptes(mm, old, new, length)
    mm.move_guards(old, new, length)


__all__ = [
    "do_mremap",
    "move_page_tables",
    "move_ptes",
]
