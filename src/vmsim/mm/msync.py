"""msync(2): mm/msync.c of Linux 6.18.

The return value and errno follow the kernel case by case: EINVAL for unknown flags, an
unaligned start, or MS_ASYNC with MS_SYNC; ENOMEM for a range that wraps or has unmapped
parts (at once for plain MS_ASYNC, after syncing the mapped parts otherwise); EBUSY for
MS_INVALIDATE on an mlocked VMA.

MS_SYNC of a shared file mapping writes the file's dirty pages back over the part of the file
the range maps (vfs_fsync_range() -> file_write_and_wait_range()): each is cleaned, its PTEs
write-protected (folio_mkclean()), so the next write faults again and re-dirties it.
tmpfs/memfd and hugetlbfs files have nothing to write (noop_fsync). MS_ASYNC starts no
writeback (a no-op since 2.6.19: the flusher, ``Machine.tick()``, writes the pages later).
"""

from __future__ import annotations

import errno

from vmsim.constants import MS_ASYNC, MS_INVALIDATE, MS_SYNC, PAGE_SIZE
from vmsim.errors import oserror
from vmsim.mm.core import U64, AddressSpace, page_align
from vmsim.mm.flags import VM_LOCKED, VM_SHARED
from vmsim.mm.page_writeback import write_range

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
        f = vma.file
        if flags & MS_SYNC and f is not None and vma.flags & VM_SHARED:
            # fstart..fend: the bytes of the file that [start, min(end, vm_end)) maps
            fstart = start - vma.start + vma.pgoff * PAGE_SIZE
            fend = fstart + min(end, vma.end) - start - 1
            write_range(mm.mem, f.inode, fstart // PAGE_SIZE, fend // PAGE_SIZE)
        start = vma.end
        if start >= end:
            break
        vma = mm.tree.find(start)
    if unmapped:
        raise oserror(errno.ENOMEM)
