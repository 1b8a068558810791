"""User memory access through the VMA permissions, with Linux's fault side effects.

Mirrors do_user_addr_fault() (arch/x86/mm/fault.c) and handle_mm_fault(): an address in no
VMA is SEGV_MAPERR (unless it lies just below a stack, which grows), a permission the VMA
lacks is SEGV_ACCERR, a file page past EOF is SIGBUS. On x86 any of read/write/exec allows a
read (the page tables cannot express write-only), only VM_WRITE allows a write.

Contents: private pages (anonymous, or file pages after copy-on-write) live in
``mm.pages`` by virtual page number; shared pages in their inode by file page offset.
Untouched memory reads as zeros.
"""

from __future__ import annotations

from vmsim.constants import PAGE_SHIFT, PAGE_SIZE, SEGV_ACCERR, SEGV_MAPERR, STACK_GUARD_GAP
from vmsim.errors import Segfault
from vmsim.mm.core import AddressSpace
from vmsim.mm.flags import VM_ACCESS_FLAGS, VM_GROWSDOWN, VM_SHARED, VM_WRITE
from vmsim.mm.vma import Vma

ZERO_PAGE = bytes(PAGE_SIZE)


def find_vma_for_access(mm: AddressSpace, addr: int, stack_limit: int) -> Vma:
    """lock_mm_and_find_vma(): the VMA for ``addr``, growing a stack downwards if needed."""
    vma = mm.tree.find(addr)
    if vma is None:
        raise Segfault(addr, SEGV_MAPERR)
    if vma.start <= addr:
        return vma
    if not (vma.flags & VM_GROWSDOWN):
        raise Segfault(addr, SEGV_MAPERR)
    # expand_downwards()
    new_start = addr & ~(PAGE_SIZE - 1)
    prev = mm.tree.prev(vma)
    if (
        prev is not None
        and not (prev.flags & VM_GROWSDOWN)
        and prev.flags & VM_ACCESS_FLAGS
        and new_start - prev.end < STACK_GUARD_GAP
    ):
        raise Segfault(addr, SEGV_MAPERR)
    if prev is not None and prev.end > new_start:
        raise Segfault(addr, SEGV_MAPERR)
    if vma.end - new_start > stack_limit:
        raise Segfault(addr, SEGV_MAPERR)
    mm.anon_vma_prepare(vma)
    grow = (vma.start - new_start) >> PAGE_SHIFT
    mm.tree.occupy(new_start, vma.start)
    mm.tree.move_start(vma, new_start)
    vma.pgoff -= grow
    return vma


def _check(vma: Vma, addr: int, write: bool) -> None:
    if write:
        if not (vma.flags & VM_WRITE):
            raise Segfault(addr, SEGV_ACCERR)
    elif not (vma.flags & VM_ACCESS_FLAGS):
        raise Segfault(addr, SEGV_ACCERR)


def page_for_read(mm: AddressSpace, vma: Vma, addr: int) -> bytes | bytearray:
    vpn = addr >> PAGE_SHIFT
    if not (vma.flags & VM_SHARED):
        page = mm.pages.get(vpn)
        if page is not None:
            return page  # type: ignore[no-any-return]
    if vma.file is None:
        return ZERO_PAGE
    return vma.file.inode.pages.get(vma.pgoff_at(addr), ZERO_PAGE)


def page_for_write(mm: AddressSpace, vma: Vma, addr: int) -> bytearray:
    vpn = addr >> PAGE_SHIFT
    if vma.flags & VM_SHARED:
        assert vma.file is not None
        pages = vma.file.inode.pages
        pg = vma.pgoff_at(addr)
        page = pages.get(pg)
        if page is None:
            page = pages[pg] = bytearray(PAGE_SIZE)
        return page
    page = mm.pages.get(vpn)
    if page is None:
        src = page_for_read(mm, vma, addr)
        page = mm.pages[vpn] = bytearray(src)
    return page


def cow_page(mm: AddressSpace, vma: Vma, addr: int) -> None:
    """Break copy-on-write of a private page (a write fault without a store)."""
    page_for_write(mm, vma, addr)


def user_read(mm: AddressSpace, addr: int, n: int, stack_limit: int) -> bytes:
    out = bytearray()
    end = addr + n
    a = addr
    while a < end:
        vma = find_vma_for_access(mm, a, stack_limit)
        _check(vma, a, False)
        mm.fault(vma, a, False)
        off = a & (PAGE_SIZE - 1)
        take = min(PAGE_SIZE - off, end - a)
        out += page_for_read(mm, vma, a)[off : off + take]
        a += take
    return bytes(out)


def user_write(mm: AddressSpace, addr: int, data: bytes, stack_limit: int) -> None:
    end = addr + len(data)
    a = addr
    pos = 0
    while a < end:
        vma = find_vma_for_access(mm, a, stack_limit)
        _check(vma, a, True)
        mm.fault(vma, a, True)
        off = a & (PAGE_SIZE - 1)
        take = min(PAGE_SIZE - off, end - a)
        page_for_write(mm, vma, a)[off : off + take] = data[pos : pos + take]
        a += take
        pos += take
