"""msync(2): mm/msync.c of Linux 6.18.

The return value and errno follow the kernel case by case: EINVAL for unknown flags, an
unaligned start, or MS_ASYNC with MS_SYNC; ENOMEM for a range that wraps or has unmapped
parts (at once for plain MS_ASYNC, after syncing the mapped parts otherwise); EBUSY for
MS_INVALIDATE on an mlocked VMA. MS_SYNC of a shared file mapping calls vfs_fsync_range()
in the kernel; the model keeps the file's dirty pages for the flusher (``Machine.tick()``),
which writes them back the same way: no return value depends on it.
"""

from __future__ import annotations

import errno

from vmsim.constants import MS_ASYNC, MS_INVALIDATE, MS_SYNC, PAGE_SIZE
from vmsim.errors import oserror
from vmsim.mm.core import U64, AddressSpace, page_align
from vmsim.mm.flags import VM_LOCKED

__all__ = ["do_msync"]


def do_msync(mm: AddressSpace, start: int, length: int, flags: int) -> None:
    """SYSCALL_DEFINE3(msync): ``start`` and ``length`` as unsigned long, ``flags`` as int."""
    if flags & ~(MS_ASYNC | MS_INVALIDATE | MS_SYNC):
        raise oserror(errno.EINVAL)
    if start & (PAGE_SIZE - 1):
        raise oserror(errno.EINVAL)
    if flags & MS_ASYNC and flags & MS_SYNC:
        raise oserror(errno.EINVAL)
    end = (start + page_align(length)) & U64
    if end < start:
        raise oserror(errno.ENOMEM)
    if end == start:
        return
    # Unmapped parts of [start, end) are skipped but make the call fail with ENOMEM at the
    # end; with plain MS_ASYNC there is nothing to do, so the first hole ends it at once.
    unmapped = False
    vma = mm.tree.find(start)
    while True:
        if vma is None:
            raise oserror(errno.ENOMEM)
        if start < vma.start:
            if flags == MS_ASYNC:
                raise oserror(errno.ENOMEM)
            start = vma.start
            if start >= end:
                raise oserror(errno.ENOMEM)
            unmapped = True
        if flags & MS_INVALIDATE and vma.flags & VM_LOCKED:
            raise oserror(errno.EBUSY)
        start = vma.end
        if start >= end:
            break
        vma = mm.tree.find(start)
    if unmapped:
        raise oserror(errno.ENOMEM)
