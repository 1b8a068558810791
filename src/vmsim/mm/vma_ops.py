"""The VMA operations of mm/vma.c: split, the two merge paths, and the munmap gather/complete.

Like mm/vma.c (whose header "includes nothing so that the VMA logic is testable in user
space"), this module imports only constants, flags, errors and the other VMA-core modules
(``vma.py``, ``tree.py``, ``vma_internal.py``). Everything that happens to pages when VMAs
go away (zapping PTEs, guard markers, the commit charge, a deleted file's page cache) goes
through ``VmaHooks``, which ``AddressSpace`` implements and a test can stub.

Both merge paths decide with one set of predicates, as vma.c does:

* ``is_mergeable_vma()``: same flags (but the sticky ones), same ``struct file``, no name;
* ``is_mergeable_anon_vma()``: the anon_vmas of target and source are compatible;
* ``can_vma_merge_after()`` / ``can_vma_merge_before()``: the above plus page-offset
  continuity with prev / next;
* ``can_vma_merge_left()`` / ``can_vma_merge_right()``: the above plus adjacency, and for
  a merge of both sides, prev's and next's anon_vmas compatible with each other.

``vma_merge_new_range()`` (mmap, brk, mremap) and ``vma_modify()`` (mprotect, mlock,
madvise, mseal: vma_merge_existing_range() or splits) fill in one ``VmaMergeStruct`` and
ask those predicates.
"""

from __future__ import annotations

import errno

from vmsim.constants import PAGE_SHIFT
from vmsim.errors import CAUSE_MAP_COUNT, oserror
from vmsim.mm.flags import (
    VM_ACCOUNT,
    VM_HUGETLB,
    VM_IGNORE_MERGE,
    VM_LOCKED,
    VM_MAYBE_GUARD,
    VM_SEALED,
    VM_SPECIAL,
)
from vmsim.mm.tree import VmaTree
from vmsim.mm.vma import AnonVma, Vma
from vmsim.mm.vma_internal import VmaHooks

__all__ = [
    "VmaMergeStruct",
    "are_anon_vmas_compatible",
    "can_vma_merge_after",
    "can_vma_merge_before",
    "can_vma_merge_left",
    "can_vma_merge_right",
    "check_map_count",
    "do_vmi_munmap",
    "is_mergeable_anon_vma",
    "is_mergeable_vma",
    "may_split",
    "split_vma",
    "split_vma_nocheck",
    "split_vma_twice",
    "vma_merge_new_range",
    "vma_modify",
    "vms_complete_munmap_vmas",
    "vms_gather_munmap_vmas",
]


# ------------------------------------------------------------------ map_count
def check_map_count(mm: VmaHooks, need: int, site: str) -> None:
    """One max_map_count check: the call needs ``max_map_count >= need`` to pass.

    ``cfg.map_count_needed`` keeps the largest ``need`` seen, which is the smallest
    limit under which every call so far would have passed this check.
    """
    cfg = mm.cfg
    if need > cfg.map_count_needed:
        cfg.map_count_needed = need
    if need > cfg.max_map_count:
        raise oserror(
            errno.ENOMEM,
            CAUSE_MAP_COUNT,
            f"{site}: map_count {len(mm.tree)}, max_map_count {cfg.max_map_count}",
        )


# ------------------------------------------------------------------ splitting
def split_vma_nocheck(tree: VmaTree, vma: Vma, addr: int) -> Vma:
    """__split_vma() (new_below = 0) without the map_count check: ``vma`` keeps
    ``[start, addr)``, the returned new VMA covers ``[addr, end)``."""
    hi = Vma(
        addr,
        vma.end,
        vma.flags,
        vma.pgoff + ((addr - vma.start) >> PAGE_SHIFT),
        vma.file,
        vma.anon_vma,
        vma.anon_singular,
        vma.name,
    )  # vm_area_dup(), made in place: the fill-to-limit hot path
    hi.swap_ra = vma.swap_ra
    vma.end = addr
    tree.insert(hi)
    return hi


def may_split(vma: Vma, addr: int) -> None:
    """vm_ops->may_split() as __split_vma() asks it: hugetlb_vm_op_split() (mm/hugetlb.c)
    refuses, with EINVAL, a split that is not on a huge page boundary."""
    f = vma.file
    if f is not None and f.inode.huge_shift and addr & ((1 << f.inode.huge_shift) - 1):
        raise oserror(errno.EINVAL)


def split_vma(mm: VmaHooks, vma: Vma, addr: int) -> Vma:
    """split_vma(): refuses with ENOMEM once ``map_count >= max_map_count``, then asks
    ``may_split``."""
    tree = mm.tree
    n = len(tree) + 1
    cfg = mm.cfg
    # check_map_count(mm, n, "split_vma()"), inlined: the fill-to-limit hot path
    if n > cfg.map_count_needed:
        cfg.map_count_needed = n
    if n > cfg.max_map_count:
        check_map_count(mm, n, "split_vma()")
    if vma.file is not None:
        may_split(vma, addr)
    return split_vma_nocheck(tree, vma, addr)


def split_vma_twice(mm: VmaHooks, vma: Vma, start: int, end: int) -> Vma:
    """split_vma() at ``start``, then at ``end``, for a range strictly inside ``vma``
    (vma_modify() of its middle); returns the VMA of ``[start, end)``.

    The same two checks as two split_vma() calls, in their order: the first refuses
    with nothing changed, the second after the first split is made (it stays). When both
    pass, the two new VMAs go into the tree in one step: mprotect of a page in the middle of
    a VMA is the fill-to-limit hot path.
    """
    tree = mm.tree
    cfg = mm.cfg
    file = vma.file
    n = len(tree._vmas) + 1  # len(tree), without its method call
    if n > cfg.map_count_needed:
        cfg.map_count_needed = n
    if n > cfg.max_map_count:
        check_map_count(mm, n, "split_vma()")
    huge = file is not None and file.inode.huge_shift
    if huge:
        may_split(vma, start)
    n += 1
    if n > cfg.map_count_needed:
        cfg.map_count_needed = n
    if n > cfg.max_map_count:
        split_vma_nocheck(tree, vma, start)
        check_map_count(mm, n, "split_vma()")
    if huge:
        try:
            may_split(vma, end)
        except OSError:
            split_vma_nocheck(tree, vma, start)  # the first split stays, as in the kernel
            raise
    vstart = vma.start
    vend = vma.end
    pgoff = vma.pgoff
    flags = vma.flags
    anon_vma = vma.anon_vma
    singular = vma.anon_singular
    name = vma.name
    mid = Vma(
        start, end, flags, pgoff + ((start - vstart) >> PAGE_SHIFT), file, anon_vma, singular, name
    )
    hi = Vma(
        end, vend, flags, pgoff + ((end - vstart) >> PAGE_SHIFT), file, anon_vma, singular, name
    )
    mid.swap_ra = hi.swap_ra = vma.swap_ra
    vma.end = start
    tree.insert_pair(mid, hi)
    return mid


# ------------------------------------------------------------ merge predicates
class VmaMergeStruct:
    """struct vma_merge_struct (mm/vma.h): a proposed range and the attributes it would have.

    ``prev``/``next`` are the candidate neighbours (None: not considered), ``middle`` the
    VMA being modified (existing-range merges only). ``anon_vma`` is the anon_vma the range
    brings (the middle's, or copy_vma()'s source for an mremap move); ``src_singular`` says
    whether its source's anon_vma_chain is singular: a VMA inherited through fork never gives
    its anon_vma to a neighbour that lacks one (vma_had_uncowed_parents() of vmg->middle or
    vmg->copied_from). ``just_expand`` (brk) never merges with next.
    """

    __slots__ = (
        "anon_vma",
        "end",
        "file",
        "flags",
        "just_expand",
        "middle",
        "next",
        "pgoff",
        "prev",
        "src_singular",
        "start",
    )

    def __init__(
        self,
        start: int,
        end: int,
        flags: int,
        file: object,
        pgoff: int,
        prev: Vma | None,
        next: Vma | None,
        anon_vma: AnonVma | None = None,
        src_singular: bool = True,
        middle: Vma | None = None,
        just_expand: bool = False,
    ) -> None:
        self.start = start
        self.end = end
        self.flags = flags
        self.file = file
        self.pgoff = pgoff
        self.prev = prev
        self.next = next
        self.anon_vma = anon_vma
        self.src_singular = src_singular
        self.middle = middle
        self.just_expand = just_expand


def is_mergeable_vma(vmg: VmaMergeStruct, merge_next: bool) -> bool:
    """is_mergeable_vma(): the neighbour has the same flags but the sticky ones
    (VM_IGNORE_MERGE: soft-dirty, VM_MAYBE_GUARD), the same ``struct file`` (one open file
    description) and no name (anon_vma_name_eq(); a special mapping's vm_ops->name)."""
    vma = vmg.next if merge_next else vmg.prev
    assert vma is not None
    return (
        vma.name is None
        and not ((vma.flags ^ vmg.flags) & ~VM_IGNORE_MERGE)
        and vma.file is vmg.file
    )


def is_mergeable_anon_vma(vmg: VmaMergeStruct, merge_next: bool) -> bool:
    """is_mergeable_anon_vma(): may the target (next or prev) and the range share an anon_vma?

    Case 1, the target has none and the range has one: dup_anon_vma() would give it to the
    target, refused if the source was inherited through fork (its chain is not singular).
    Case 2, the target has one and the range none: the range would use the target's,
    refused if the target was inherited through fork. Case 3: both have one (or neither):
    they must be the same.
    """
    tgt = vmg.next if merge_next else vmg.prev
    assert tgt is not None
    tgt_anon = tgt.anon_vma
    src_anon = vmg.anon_vma
    if tgt_anon is None and src_anon is not None:
        return vmg.src_singular
    if tgt_anon is not None and src_anon is None:
        return tgt.anon_singular
    return src_anon is tgt_anon


def are_anon_vmas_compatible(vma1: Vma, vma2: Vma) -> bool:
    """are_anon_vmas_compatible(): for a merge of both sides, prev's and next's anon_vmas
    must not be two different ones (each may be compatible with the range on its own)."""
    a = vma1.anon_vma
    b = vma2.anon_vma
    return a is None or b is None or a is b


def can_vma_merge_before(vmg: VmaMergeStruct) -> bool:
    """can_vma_merge_before(): the range can go in front of ``vmg.next`` (lower addresses
    and file offsets): mergeable, and next's page offset continues the range's."""
    nxt = vmg.next
    assert nxt is not None
    return (
        is_mergeable_vma(vmg, True)
        and is_mergeable_anon_vma(vmg, True)
        and nxt.pgoff == vmg.pgoff + ((vmg.end - vmg.start) >> PAGE_SHIFT)
    )


def can_vma_merge_after(vmg: VmaMergeStruct) -> bool:
    """can_vma_merge_after(): the range can go after ``vmg.prev``: mergeable, and the
    range's page offset continues prev's."""
    prev = vmg.prev
    assert prev is not None
    return (
        is_mergeable_vma(vmg, False)
        and is_mergeable_anon_vma(vmg, False)
        and prev.pgoff + ((prev.end - prev.start) >> PAGE_SHIFT) == vmg.pgoff
    )


def can_vma_merge_left(vmg: VmaMergeStruct) -> bool:
    """can_vma_merge_left(): prev ends where the range starts and can take it::

    |<-prev->|<-range->|
    """
    prev = vmg.prev
    return prev is not None and prev.end == vmg.start and can_vma_merge_after(vmg)


def can_vma_merge_right(vmg: VmaMergeStruct, can_merge_left: bool) -> bool:
    """can_vma_merge_right(): next starts where the range ends and can take it; if prev
    can take it too, prev and next must also be compatible WITH EACH OTHER (their
    anon_vmas), else only the left merge is done::

        |<-range->|<-next->|        |<-prev->|<-range->|<-next->|
    """
    nxt = vmg.next
    if vmg.just_expand or nxt is None or nxt.start != vmg.end or not can_vma_merge_before(vmg):
        return False
    if not can_merge_left:
        return True
    prev = vmg.prev
    assert prev is not None
    return are_anon_vmas_compatible(prev, nxt)


def can_merge_remove_vma(vma: Vma) -> bool:
    """can_merge_remove_vma(): a merge may delete ``vma`` only if it has no vm_ops->close
    (a merge frees the VMA without closing it): SysV shm attaches (shm_close() keeps
    shm_nattch, one count per VMA) and hugetlb VMAs have one."""
    f = vma.file
    return not (vma.flags & VM_HUGETLB or (f is not None and f.inode.path.startswith("/SYSV")))


def _dup_anon_vma(dst: Vma, *srcs: Vma | None) -> None:
    """dup_anon_vma(): the VMA that grows over another's range inherits its anon_vma, if
    it lacked one ("easily overlooked: when mprotect shifts the boundary")."""
    if dst.anon_vma is None:
        for src in srcs:
            if src is not None and src.anon_vma is not None:
                dst.anon_vma = src.anon_vma
                dst.anon_singular = src.anon_singular
                return


# ------------------------------------------------------------ new-range merges
def vma_merge_new_range(tree: VmaTree, vmg: VmaMergeStruct) -> Vma | None:
    """vma_merge_new_range(): merge a new range with prev, next or both; None if neither.

    The range ``[vmg.start, vmg.end)`` must be free. The cases (vma.c)::

        1. expand prev or next         Proposed:       |-----|  or  |-----|
                                       Existing:  |----|                  |----|

        2. expand prev, remove next    Proposed:       |-----|
                                       Existing:  |----|     |----|

        3. neither can take it: no merge (the caller inserts a new VMA).

    A neighbour without an anon_vma that takes the range gets the range's
    (``vmg.anon_vma``); the survivor keeps every sticky flag (VM_MAYBE_GUARD) of the pieces.
    """
    if vmg.flags & VM_SPECIAL or (vmg.prev is None and vmg.next is None):
        return None
    can_left = can_vma_merge_left(vmg)
    can_right = can_vma_merge_right(vmg, can_left)
    if not (can_left or can_right):
        return None
    if can_left and can_right and vmg.next is not None and not can_merge_remove_vma(vmg.next):
        can_right = False  # only prev takes the range
    start = vmg.start
    end = vmg.end
    src_anon = vmg.anon_vma
    sticky = vmg.flags & VM_MAYBE_GUARD
    tree.occupy(start, end)
    if can_left:
        prev = vmg.prev
        assert prev is not None
        if can_right:
            nxt = vmg.next
            assert nxt is not None
            tree.remove(nxt)
            prev.end = nxt.end
            _dup_anon_vma(prev, nxt)
            sticky |= nxt.flags & VM_MAYBE_GUARD
        else:
            prev.end = end
        if prev.anon_vma is None and src_anon is not None:
            prev.anon_vma = src_anon
            prev.anon_singular = vmg.src_singular
        prev.flags |= sticky
        return prev
    nxt = vmg.next
    assert nxt is not None
    tree.move_start(nxt, start)
    nxt.pgoff = vmg.pgoff
    if nxt.anon_vma is None and src_anon is not None:
        nxt.anon_vma = src_anon
        nxt.anon_singular = vmg.src_singular
    nxt.flags |= sticky
    return nxt


# ------------------------------------------------------- existing-range merges
def vma_merge_existing_range(tree: VmaTree, vmg: VmaMergeStruct) -> Vma | None:
    """vma_merge_existing_range(): ``[vmg.start, vmg.end)`` of ``vmg.middle`` takes the
    flags ``vmg.flags``; merge it into prev and/or next if they can take it, else None.

    Only a range that touches an end of the VMA can merge. The cases (vma.c)::

        merge both:            |<----->|
                       |-------*********-------|
                         prev     vma     next
                        extend   delete  delete

        merge left:            |<----->| OR
                               |<--------->|
                       |-------*************
                         prev       vma
                        extend shrink/delete

        merge right:       |<----->| OR
                       |<--------->|
                       *************-------|
                            vma       next
                       shrink/delete extend

    Returns the VMA that now covers the range: prev, or next (the only case where the
    merged VMA is not the one that was extended over the range is "next grows down over
    the tail of vma").
    """
    vma = vmg.middle
    assert vma is not None
    start = vmg.start
    end = vmg.end
    left_side = start == vma.start
    right_side = end == vma.end
    merge_left = left_side and can_vma_merge_left(vmg)
    merge_right = right_side and can_vma_merge_right(vmg, merge_left)
    if not (merge_left or merge_right):
        return None
    if left_side and right_side and not can_merge_remove_vma(vma):
        return None  # the merge would delete vma, which it may not
    if merge_left and merge_right and vmg.next is not None and not can_merge_remove_vma(vmg.next):
        merge_right = False  # nor next: prev takes vma alone
    sticky = (vmg.flags | vma.flags) & VM_MAYBE_GUARD
    if merge_left:
        prev = vmg.prev
        assert prev is not None
        sticky |= prev.flags & VM_MAYBE_GUARD
        if merge_right:  # prev + whole vma + next
            nxt = vmg.next
            assert nxt is not None
            tree.remove(vma)
            tree.remove(nxt)
            prev.end = nxt.end
            _dup_anon_vma(prev, vma, nxt)
            sticky |= nxt.flags & VM_MAYBE_GUARD
        elif right_side:  # prev + whole vma
            tree.remove(vma)
            prev.end = vma.end
            _dup_anon_vma(prev, vma)
        else:  # prev grows over the head of vma
            prev.end = end
            tree.move_start(vma, end)
            vma.pgoff += (end - start) >> PAGE_SHIFT
            _dup_anon_vma(prev, vma)
        merged = prev
    else:
        nxt = vmg.next
        assert nxt is not None
        if left_side:  # whole vma + next
            tree.remove(vma)
            tree.move_start(nxt, start)
            nxt.pgoff = vma.pgoff
        else:  # next grows down over the tail of vma
            vma.end = start
            tree.move_start(nxt, start)
            nxt.pgoff = vma.pgoff_at(start)
        _dup_anon_vma(nxt, vma)
        sticky |= nxt.flags & VM_MAYBE_GUARD
        merged = nxt
    merged.flags = vmg.flags | sticky
    return merged


def vma_modify(mm: VmaHooks, vma: Vma, start: int, end: int, newflags: int) -> Vma:
    """vma_modify_flags(): give ``[start, end)`` of ``vma`` the flags ``newflags``.

    Tries vma_merge_existing_range() when the range touches either end of the VMA,
    otherwise splits at start then at end, each split checked against max_map_count;
    a failure leaves the earlier split in place (the kernel does not undo it).
    Returns the VMA that now covers exactly ``[start, end)``.
    """
    left_side = start == vma.start
    right_side = end == vma.end
    if (left_side or right_side) and not (newflags & VM_SPECIAL):
        tree = mm.tree
        vmg = VmaMergeStruct(
            start,
            end,
            newflags,
            vma.file,
            vma.pgoff_at(start),
            tree.prev(vma) if left_side else None,
            tree.next(vma) if right_side else None,
            vma.anon_vma,
            vma.anon_singular,
            middle=vma,
        )
        merged = vma_merge_existing_range(tree, vmg)
        if merged is not None:
            return merged
    if left_side:
        if not right_side:
            split_vma(mm, vma, end)
    elif right_side:
        vma = split_vma(mm, vma, start)
    else:
        vma = split_vma_twice(mm, vma, start, end)
    vma.flags = newflags
    return vma


# ------------------------------------------------------------------ unmapping
def vms_gather_munmap_vmas(mm: VmaHooks, start: int, end: int, first: Vma) -> list[Vma]:
    """vms_gather_munmap_vmas(): split the edges and collect the VMAs of ``[start, end)``.

    ``first`` is the first VMA that overlaps the range. The count check applies only when
    the range lies strictly inside one VMA; a sealed VMA refuses with EPERM, after any
    split of the first VMA already made (the kernel leaves that split in place).
    """
    tree = mm.tree
    vma = first
    if start > vma.start:
        if end < vma.end:
            check_map_count(mm, len(tree) + 1, "vms_gather_munmap_vmas()")
        if vma.flags & VM_SEALED:
            raise oserror(errno.EPERM)
        if vma.file is not None:
            may_split(vma, start)
        vma = split_vma_nocheck(tree, vma, start)
    out = [vma] if vma.end >= end else tree.range(vma.start, end)
    for v in out:
        if v.flags & VM_SEALED:
            raise oserror(errno.EPERM)
    last = out[-1]
    if last.end > end:
        if last.file is not None:
            may_split(last, end)
        split_vma_nocheck(tree, last, end)
    return out


def vms_complete_munmap_vmas(mm: VmaHooks, vmas: list[Vma]) -> None:
    """vms_complete_munmap_vmas(): the gathered VMAs leave the tree (their range becomes
    free), then map_count, locked_vm, the PTEs (vms_clear_ptes()), each file's reference
    (remove_vma(): fput()) and the commit charge (vm_unacct_memory()) follow, in that order.
    """
    mm.tree.remove_unmapped_many(vmas)
    nr_accounted = 0
    locked = 0
    for v in vmas:
        flags = v.flags
        if flags & (VM_ACCOUNT | VM_LOCKED):
            pages = (v.end - v.start) >> PAGE_SHIFT
            if flags & VM_ACCOUNT:
                nr_accounted += pages
            if flags & VM_LOCKED:
                locked += pages
    if locked:
        mm.locked_vm -= locked
    mm.unmap_vmas(vmas)
    for v in vmas:
        if v.file is not None:
            mm.remove_vma(v)
    if nr_accounted:
        mm.vm_unacct(nr_accounted)


def do_vmi_munmap(mm: VmaHooks, start: int, end: int) -> None:
    """do_vmi_align_munmap() on an aligned, validated range: gather, then complete."""
    first = mm.tree.find(start)  # find_vma_intersection()
    if first is None or first.start >= end:
        return
    vms_complete_munmap_vmas(mm, vms_gather_munmap_vmas(mm, start, end, first))
