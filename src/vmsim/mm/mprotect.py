"""mprotect(2) (mm/mprotect.c), mlock(2)/munlock(2) (mm/mlock.c) and mseal(2) (mm/mseal.c).

Each walks the VMAs of the range left to right and changes their flags through
``AddressSpace.vma_modify`` (merge with a neighbour, or split); an error part-way leaves the
VMAs already handled changed, as in the kernel.
"""

from __future__ import annotations

import errno

from vmsim.constants import (
    MCL_CURRENT,
    MCL_FUTURE,
    MCL_ONFAULT,
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SIZE,
    PROT_EXEC,
    PROT_GROWSDOWN,
    PROT_GROWSUP,
    PROT_READ,
    PROT_SEM,
    PROT_WRITE,
)
from vmsim.errors import oserror
from vmsim.hw.pte import PAGE_ACCESSED, PAGE_DIRTY, PAGE_PRESENT, PAGE_RW, PAGE_SPECIAL, pfn_pte
from vmsim.mm import huge_memory, hugetlb, vma_ops
from vmsim.mm.core import PAGE_MASK64, U64, AddressSpace, page_align
from vmsim.mm.flags import (
    VM_ACCESS_FLAGS,
    VM_ACCOUNT,
    VM_DROPPABLE,
    VM_GROWSDOWN,
    VM_HUGETLB,
    VM_LOCKED,
    VM_LOCKED_MASK,
    VM_LOCKONFAULT,
    VM_NORESERVE,
    VM_SEALED,
    VM_SHARED,
    VM_SPECIAL,
    VM_WRITE,
)
from vmsim.mm.internal import entry_pfn, page_prot, present
from vmsim.mm.mlock import mlock_pages
from vmsim.mm.rmap import anon_exclusive
from vmsim.mm.vma import Vma
from vmsim.phys.frames import PageFlag

_ANON = int(PageFlag.ANON)
_HEAD = int(PageFlag.HEAD)
# Bits pte_modify() keeps from the old entry when the protection changes (_PAGE_CHG_MASK):
# accessed and dirty come from the entry, never from the new protection.
_CHG_MASK = PAGE_ACCESSED | PAGE_DIRTY | PAGE_SPECIAL


# The masks do_mprotect() tests, computed once (module constants: it is the fill-to-limit hot
# path, where each `A | B` of two globals costs as much as the test itself)
_GROWS = PROT_GROWSDOWN | PROT_GROWSUP
_PROT_VALID = PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM
_PROT_VM = PROT_READ | PROT_WRITE | PROT_EXEC  # calc_vm_prot_bits(): the same bit values
_PAGE_OFFSET = PAGE_SIZE - 1
# mprotect_fixup(): a VMA made writable is charged (VM_ACCOUNT) unless it has one of these
_NOT_CHARGED = VM_ACCOUNT | VM_WRITE | VM_HUGETLB | VM_SHARED | VM_NORESERVE
# ... and populated if it was locked, private and not writable (== VM_LOCKED)
_PRIVATE_LOCKED = VM_WRITE | VM_SHARED | VM_LOCKED


def do_mprotect(mm: AddressSpace, start: int, length: int, prot: int) -> None:
    """do_mprotect_pkey() with pkey -1."""
    grows = prot & _GROWS
    prot &= ~_GROWS
    if grows == _GROWS:
        raise oserror(errno.EINVAL)
    if start & _PAGE_OFFSET:
        raise oserror(errno.EINVAL)
    if not length:
        return
    length = (length + _PAGE_OFFSET) & PAGE_MASK64  # page_align(), inline
    end = (start + length) & U64
    if end <= start:
        raise oserror(errno.ENOMEM)
    if prot & ~_PROT_VALID:
        raise oserror(errno.EINVAL)
    tree = mm.tree
    vma = tree.lookup(start)  # the common case: start is mapped (then it is find()'s VMA)
    if vma is None:
        vma = tree.find(start)
    if vma is None or vma.start >= end:
        raise oserror(errno.ENOMEM)
    if grows & PROT_GROWSDOWN:
        start = vma.start
        if not (vma.flags & VM_GROWSDOWN):
            raise oserror(errno.EINVAL)
    else:
        if vma.start > start:
            raise oserror(errno.ENOMEM)
        if grows & PROT_GROWSUP:
            raise oserror(errno.EINVAL)
    nstart = start
    tmp = vma.start
    newprot = prot & _PROT_VM  # calc_vm_prot_bits(), inline
    cur: Vma | None = vma
    while cur is not None and cur.start < end:
        if cur.start != tmp:
            raise oserror(errno.ENOMEM)
        newflags = newprot | (cur.flags & ~VM_ACCESS_FLAGS)
        # VM_MAY* shifted right by 4 must allow every requested access bit
        if (newflags & ~(newflags >> 4)) & VM_ACCESS_FLAGS:
            raise oserror(errno.EACCES)
        tmp = cur.end if cur.end < end else end  # min(), without the call
        cur = mprotect_fixup(mm, cur, nstart, tmp, newflags)
        tmp = cur.end
        if tmp >= end:  # done: the next VMA starts at or after end
            return
        nstart = tmp
        cur = tree.next(cur)
    if tmp < end:
        raise oserror(errno.ENOMEM)


def mprotect_fixup(mm: AddressSpace, vma: Vma, start: int, end: int, newflags: int) -> Vma:
    """mprotect_fixup(): VM_ACCOUNT follows write permission, then the flags change."""
    if vma.flags & VM_SEALED:
        raise oserror(errno.EPERM)
    oldflags = vma.flags
    if newflags == oldflags:
        return vma
    nrpages = (end - start) >> PAGE_SHIFT
    charged = 0
    if newflags & VM_WRITE:
        if not (oldflags & _NOT_CHARGED):
            if not mm.vm_enough_memory(nrpages):
                raise mm.commit_error(nrpages)
            charged = nrpages
            newflags |= VM_ACCOUNT
    elif oldflags & VM_ACCOUNT and vma.is_anonymous and vma.anon_vma is None:
        newflags &= ~VM_ACCOUNT
    try:
        if vma.start < start and end < vma.end:
            # vma_modify() of a range strictly inside the VMA (no merge to try), its
            # fill-to-limit case taken straight
            vma = vma_ops.split_vma_twice(mm, vma, start, end)
            vma.flags = newflags
        else:
            vma = vma_ops.vma_modify(mm, vma, start, end, newflags)
    except OSError:
        mm.vm_unacct(charged)
        raise
    if oldflags & VM_ACCOUNT and not (newflags & VM_ACCOUNT):
        mm.vm_unacct(nrpages)
    if vma.flags & VM_HUGETLB or mm.pt.table_pages > 1:  # else change_protection() does nothing
        change_protection(mm, vma, start, end)
    # Private pages of a locked VMA made writable are faulted in (write faults) right away,
    # so they stay locked after the copy-on-write.
    if (oldflags & _PRIVATE_LOCKED) == VM_LOCKED and newflags & VM_WRITE:
        mm.populate(start, end, ignore_errors=True)
    return vma


# ------------------------------------------------------------------- mlock
def do_mlock(mm: AddressSpace, start: int, length: int, lockflags: int) -> None:
    """do_mlock(): start rounded down, length rounded up over the page offset; the range is
    locked VMA by VMA, then populated (a PROT_NONE or unpopulatable VMA makes mlock fail
    with ENOMEM after it has been marked locked)."""
    length = page_align(length + (start & (PAGE_SIZE - 1)))
    start &= ~(PAGE_SIZE - 1)
    apply_vma_lock_flags(mm, start, length, lockflags)
    end = start + length
    if length and not mm.populate(start, end, ignore_errors=False):
        raise oserror(errno.ENOMEM)


def do_munlock(mm: AddressSpace, start: int, length: int) -> None:
    length = page_align(length + (start & (PAGE_SIZE - 1)))
    start &= ~(PAGE_SIZE - 1)
    apply_vma_lock_flags(mm, start, length, 0)


def apply_vma_lock_flags(mm: AddressSpace, start: int, length: int, lockflags: int) -> None:
    end = start + length
    if end > U64:
        raise oserror(errno.EINVAL)
    if end == start:
        return
    tree = mm.tree
    vma = tree.lookup(start)
    if vma is None:
        raise oserror(errno.ENOMEM)
    nstart = start
    tmp = vma.start
    cur: Vma | None = vma
    while cur is not None and cur.start < end:
        if cur.start != tmp:
            raise oserror(errno.ENOMEM)
        newflags = (cur.flags & ~VM_LOCKED_MASK) | lockflags
        tmp = min(cur.end, end)
        cur = mlock_fixup(mm, cur, nstart, tmp, newflags)
        tmp = cur.end
        nstart = tmp
        cur = tree.next(cur)
    if tmp < end:
        raise oserror(errno.ENOMEM)


def mlock_fixup(mm: AddressSpace, vma: Vma, start: int, end: int, newflags: int) -> Vma:
    oldflags = vma.flags
    if newflags == oldflags or oldflags & (VM_SPECIAL | VM_DROPPABLE | VM_HUGETLB):
        return vma
    vma = mm.vma_modify(vma, start, end, newflags)
    nr = (end - start) >> PAGE_SHIFT
    if not (newflags & VM_LOCKED):
        mm.locked_vm -= nr
        mlock_pages(mm, start, end, False)
    elif not (oldflags & VM_LOCKED):
        mm.locked_vm += nr
        mlock_pages(mm, start, end, True)
    return vma


def do_mlockall(mm: AddressSpace, flags: int) -> None:
    """mlockall(2) / apply_mlockall_flags(): MCL_FUTURE sets mm->def_flags for every later
    mapping; MCL_CURRENT locks every VMA (errors ignored) and populates them all."""
    if not flags or flags & ~(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) or flags == MCL_ONFAULT:
        raise oserror(errno.EINVAL)
    _apply_mlockall(mm, flags)
    if flags & MCL_CURRENT:
        mm.populate(0, mm.cfg.task_size, ignore_errors=True)


def do_munlockall(mm: AddressSpace) -> None:
    _apply_mlockall(mm, 0)


def _apply_mlockall(mm: AddressSpace, flags: int) -> None:
    mm.def_flags &= ~VM_LOCKED_MASK
    if flags & MCL_FUTURE:
        mm.def_flags |= VM_LOCKED | (VM_LOCKONFAULT if flags & MCL_ONFAULT else 0)
        if not flags & MCL_CURRENT:
            return
    to_add = 0
    if flags & MCL_CURRENT:
        to_add = VM_LOCKED | (VM_LOCKONFAULT if flags & MCL_ONFAULT else 0)
    vma = mm.tree.first()
    while vma is not None:
        newflags = (vma.flags & ~VM_LOCKED_MASK) | to_add
        try:
            vma = mlock_fixup(mm, vma, vma.start, vma.end, newflags)
        except OSError:
            pass  # "Ignore errors, but prev needs fixing up."
        vma = mm.tree.next(vma)


# ------------------------------------------------------------------- mseal
def do_mseal(mm: AddressSpace, start: int, length: int, flags: int) -> None:
    """do_mseal(): the whole range must be mapped (checked before any change)."""
    if flags:
        raise oserror(errno.EINVAL)
    if start & (PAGE_SIZE - 1):
        raise oserror(errno.EINVAL)
    aligned = page_align(length)
    if length and not aligned:
        raise oserror(errno.EINVAL)
    end = start + aligned
    if end > U64:
        raise oserror(errno.EINVAL)
    if end == start:
        return
    tree = mm.tree
    prev_end = start
    for v in tree.range(start, end):
        if v.start > prev_end:
            raise oserror(errno.ENOMEM)
        prev_end = v.end
    if prev_end < end:
        raise oserror(errno.ENOMEM)
    # mseal_apply() walks on from the end of each VMA *as it was* (curr_end), and its iterator
    # then finds the VMA containing that address: after a merge with the next VMA that is the
    # merged one again (already sealed), so the following VMA can merge into it in turn.
    curr_start = start
    cur = tree.lookup(start)
    while cur is not None and curr_start < end:
        curr_end = min(cur.end, end)
        if not (cur.flags & VM_SEALED):
            mm.vma_modify(cur, curr_start, curr_end, cur.flags | VM_SEALED)
        curr_start = curr_end
        cur = tree.find(curr_end)


def change_protection(mm: AddressSpace, vma: Vma, start: int, end: int) -> int:
    """change_pte_range(): give every present PTE of ``[start, end)`` the VMA's (new)
    protection. Write permission is kept only where the fault handler would grant it
    without a copy: an anonymous page nobody else holds in a writable private VMA, or a dirty
    page of a shared one; anything else waits for its write fault. Returns pages changed."""
    if vma.flags & VM_HUGETLB:
        return hugetlb.hugetlb_change_protection(mm, vma, start, end)
    if not mm.pt_used or start >= end:
        return 0
    prot = page_prot(vma)
    frames = mm.mem.frames
    zero = frames.zero_pfn
    writable = vma.flags & VM_WRITE
    shared = vma.flags & VM_SHARED
    changed = []
    narrowed = False
    exclusive: dict[int, bool] = {}  # per folio: one rmap walk for a large one
    for haddr in huge_memory.pmd_leaves(mm, start, end):
        if haddr < start or haddr + PMD_SIZE > end:  # change_pmd_range(): a partial one
            huge_memory.split_huge_pmd(mm, vma, haddr)
    for m in list(mm.pt.iter_leaves(start, end)):
        e = m.entry
        if m.level > 1:  # change_huge_pmd()
            _new, narrow = huge_memory.change_huge_pmd(mm, vma, m.vaddr, e)
            if narrow:
                mm.mem.cpu.flush_range(mm, m.vaddr, m.vaddr + PMD_SIZE)
            continue
        if not present(e):
            continue
        pfn = entry_pfn(e)
        new = (pfn_pte(pfn, prot) & ~_CHG_MASK) | (e & _CHG_MASK)  # pte_modify()
        if writable and not new & PAGE_RW:
            if shared:
                if e & PAGE_DIRTY:
                    new |= PAGE_RW
            elif pfn != zero and frames.flags(pfn) & _ANON:
                head = frames.head(pfn) if frames.flags(pfn) & _HEAD else pfn
                ok = exclusive.get(head)
                if ok is None:
                    ok = exclusive[head] = anon_exclusive(mm.mem, pfn, mm)
                if ok:
                    new |= PAGE_RW
        if new != e:
            # anything the old entry allowed that the new does not needs a flush
            if (e & PAGE_PRESENT and not new & PAGE_PRESENT) or (e & ~new & PAGE_RW):
                narrowed = True
            if new & (1 << 63) and not e & (1 << 63):
                narrowed = True
            mm.pt.set(m.vaddr, new)
            changed.append(m.vaddr)
    if changed and narrowed:
        mm.mem.cpu.flush_range(mm, changed[0], changed[-1] + PAGE_SIZE)
    return len(changed)


__all__ = [
    "apply_vma_lock_flags",
    "change_protection",
    "do_mlock",
    "do_mlockall",
    "do_mprotect",
    "do_mseal",
    "do_munlock",
    "do_munlockall",
    "mlock_fixup",
    "mprotect_fixup",
]
