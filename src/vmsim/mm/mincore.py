"""mincore(2) (mm/mincore.c)."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from vmsim.constants import PAGE_SHIFT, PAGE_SIZE
from vmsim.errors import oserror
from vmsim.mm.internal import present
from vmsim.mm.swapops import pte_to_swp_entry

if TYPE_CHECKING:
    from vmsim.mm.core import AddressSpace

__all__ = ["mincore"]


def mincore(mm: AddressSpace, start: int, length: int) -> bytes:
    """mincore(2) (mm/mincore.c): for each page, 1 if a PTE maps it (the zero page too) or,
    for a file mapping without a PTE, if the page cache holds it; a guard marker counts as
    no PTE. EINVAL for an unaligned start, ENOMEM for a range beyond the address space or
    with a hole."""
    if start & (PAGE_SIZE - 1):
        raise oserror(errno.EINVAL)
    npages = (length >> PAGE_SHIFT) + (1 if length & (PAGE_SIZE - 1) else 0)
    end = start + (npages << PAGE_SHIFT)
    if end > mm.cfg.task_size or end < start:
        raise oserror(errno.ENOMEM)
    out = bytearray()
    a = start
    while a < end:
        vma = mm.tree.lookup(a)
        if vma is None:
            raise oserror(errno.ENOMEM)
        stop = min(vma.end, end)
        while a < stop:
            leaf = mm.pt.get(a) if mm.pt_used else None
            e = leaf.entry if leaf is not None else 0
            if present(e):
                out.append(1)
            elif e:  # a swap entry: resident if in the swap cache
                out.append(1 if pte_to_swp_entry(e) in mm.mem.swap.cache else 0)
            elif vma.file is not None:
                out.append(1 if vma.pgoff_at(a) in vma.file.inode.pages else 0)
            else:
                out.append(0)
            a += PAGE_SIZE
    return bytes(out)
