"""User memory access through the TLB and the page tables, with Linux's fault handling.

A user access to ``addr`` is what the CPU does: look the page up in the TLB (tagged with the
address space's PCID); on a miss, walk the page tables (``vmsim.hw.mmu.walk``: permission
checks, A and D set in memory) and fill the TLB. A walk that faults enters the kernel's
do_user_addr_fault() (arch/x86/mm/fault.c): an address in no VMA is SEGV_MAPERR (unless it lies
just below a stack, which grows), a permission the VMA lacks is SEGV_ACCERR; otherwise
handle_mm_fault() (``vmsim.mm.memory``) fixes the tables and the access is retried. As on x86,
a fault also drops the TLB entry for the address (SDM 4.10.4.2), and a write through an entry
whose dirty bit is clear re-walks to set it.

``peek``/``poke`` access another process's memory the way ``/proc/<pid>/mem`` and ptrace do
(get_user_pages() with FOLL_FORCE): no TLB, no stack growth, and a forced write into a
read-only private mapping breaks COW into a private copy, never touching the file.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Literal

from vmsim.constants import PAGE_SHIFT, PAGE_SIZE, SEGV_ACCERR, SEGV_MAPERR, STACK_GUARD_GAP
from vmsim.errors import BusError, Segfault, oserror
from vmsim.hw.mmu import PageFault, walk
from vmsim.hw.pagetable import WalkStep
from vmsim.hw.pte import PAGE_DIRTY, PAGE_NX, PAGE_PKEY_MASK, PAGE_RW, PAGE_USER, pfn_of
from vmsim.hw.tlb import KEY_SHIFT, TlbKind
from vmsim.mm.core import AddressSpace
from vmsim.mm.flags import (
    VM_ACCESS_FLAGS,
    VM_EXEC,
    VM_GROWSDOWN,
    VM_IO,
    VM_MAYREAD,
    VM_PFNMAP,
    VM_READ,
    VM_SHADOW_STACK,
    VM_WRITE,
)
from vmsim.mm.gup import gup_touch
from vmsim.mm.internal import is_cow_mapping
from vmsim.mm.memory import handle_mm_fault
from vmsim.mm.vma import Vma
from vmsim.phys.frames import PageFlag

assert KEY_SHIFT == 15 and PAGE_SHIFT == 12  # the inline probe below hard-codes both
Access = Literal["read", "write", "exec"]
_PERMS = PAGE_RW | PAGE_USER | PAGE_DIRTY | PAGE_NX | PAGE_PKEY_MASK
_OFFSET = PAGE_SIZE - 1
_RW_D = PAGE_RW | PAGE_DIRTY
_DIRTY_FLAG = int(PageFlag.DIRTY)


@dataclass(frozen=True)
class Translation:
    """One translated user access (``Process.translate``).

    ``entries`` are the page-table entries for the address at every level, top first, as
    they are after the access; ``tlb`` says where the translation came from: "L1", "STLB",
    or None when the page walker had to read ``memory_refs`` entries from memory; ``faults``
    lists what the kernel did when the access faulted ("zero-page", "anon", "cow", ...).
    """

    vaddr: int
    access: str
    paddr: int
    pfn: int
    page_size: int
    entries: tuple[WalkStep, ...]
    tlb: str | None
    memory_refs: int
    faults: tuple[str, ...]


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


def access_error(vma: Vma, addr: int, access: str) -> None:
    """access_error(): on x86 any of read/write/exec allows a read (the page tables cannot
    express write-only), a write needs VM_WRITE, a fetch VM_EXEC."""
    if access == "write":
        ok = vma.flags & VM_WRITE
    elif access == "exec":
        ok = vma.flags & VM_EXEC
    else:
        ok = vma.flags & VM_ACCESS_FLAGS
    if not ok:
        raise Segfault(addr, SEGV_ACCERR)


def do_user_addr_fault(mm: AddressSpace, addr: int, access: str, stack_limit: int) -> str:
    vma = find_vma_for_access(mm, addr, stack_limit)
    access_error(vma, addr, access)
    return handle_mm_fault(mm, vma, addr, access == "write")


def user_access(
    mm: AddressSpace, addr: int, access: Access, stack_limit: int, detail: bool = False
) -> Translation | int:
    """Translate one user access to ``addr``; returns the frame number (or, with
    ``detail``, a ``Translation``). Raises Segfault / BusError as the process would see."""
    fast = mm.fast
    if fast is not None and not detail:
        # The common case inline: an L1 dTLB hit on a 4 KiB page with the current PCID (the
        # same probe TlbHierarchy.lookup() makes first; anything else takes the long way).
        # Entries are TlbEntry tuples: [2] is the pfn, [3] the permission bits.
        sets, mask, pcid = fast
        pn = addr >> 12
        s = sets[pn & mask]
        key = (pn << 15) | pcid  # KEY_SHIFT, size code 0 (4 KiB)
        hit = s.get(key)
        if hit is not None and (
            access == "read" or (access == "write" and hit[3] & _RW_D == _RW_D)
        ):
            del s[key]
            s[key] = hit
            mm.mem.cpu.tlb.dtlb_hits += 1
            mm.stats.tlb_l1_hits += 1
            return hit[2]  # type: ignore[no-any-return]
    mem = mm.mem
    tlb = mem.cpu.tlb
    pcid = mm.pcid if mem.cpu.current is mm else mem.cpu.switch_to(mm)
    kind: TlbKind = "instr" if access == "exec" else "data"
    write = access == "write"
    st = mm.stats
    faults: list[str] = []
    for _ in range(4):
        e, level = tlb.lookup(addr, pcid, kind)
        if e is not None:
            perms = e.perms
            if access == "exec":
                ok = not perms & PAGE_NX
            elif write:
                ok = bool(perms & PAGE_RW and perms & PAGE_DIRTY)
            else:
                ok = True
            if ok:
                if level == "L1":
                    st.tlb_l1_hits += 1
                else:
                    st.tlb_stlb_hits += 1
                pfn = e.pfn + ((addr - e.vbase) >> PAGE_SHIFT)
                if not detail:
                    return pfn
                return _detail(mm, addr, access, pfn, e.page_size, level, 0, faults)
            if write and perms & PAGE_RW:
                tlb.invlpg(addr, pcid)  # D clear: the CPU re-walks to set it
            else:
                tlb.invlpg(addr, pcid)
                mem.cpu.pwc.flush()
                faults.append(do_user_addr_fault(mm, addr, access, stack_limit))
                continue
        try:
            t = walk(mm.pt, addr, access, pwc=mem.cpu.pwc)
        except PageFault:
            tlb.invlpg(addr, pcid)
            faults.append(do_user_addr_fault(mm, addr, access, stack_limit))
            mem.cpu.pwc.flush()
            continue
        st.walks += 1
        st.tlb_misses += 1
        st.walk_refs += t.memory_refs
        mem.stats.walks += 1
        mem.stats.walk_refs += t.memory_refs
        if t.pwc_hit:
            st.pwc_hits += 1
            mem.stats.pwc_hits += 1
        leaf = t.entries[-1].entry
        base_pfn = pfn_of(leaf, t.level)
        tlb.insert(addr, t.page_size, base_pfn, leaf & _PERMS, pcid, False, kind)
        pfn = t.paddr >> PAGE_SHIFT
        if not detail:
            return pfn
        return _detail(mm, addr, access, pfn, t.page_size, None, t.memory_refs, faults)
    raise RuntimeError(f"{addr:#x}: the fault handler made no progress")  # pragma: no cover


def _detail(
    mm: AddressSpace,
    addr: int,
    access: str,
    pfn: int,
    page_size: int,
    level: str | None,
    refs: int,
    faults: list[str],
) -> Translation:
    for f in faults:
        if f == "spurious":
            mm.stats.spurious_faults += 1
    return Translation(
        vaddr=addr,
        access=access,
        paddr=(pfn << PAGE_SHIFT) | (addr & _OFFSET),
        pfn=pfn,
        page_size=page_size,
        entries=tuple(mm.pt.walk(addr)),
        tlb=level,
        memory_refs=refs,
        faults=tuple(faults),
    )


def translate(mm: AddressSpace, addr: int, access: Access, stack_limit: int) -> Translation:
    if access not in ("read", "write", "exec"):
        raise ValueError(f"access must be read, write or exec, not {access!r}")
    t = user_access(mm, addr, access, stack_limit, detail=True)
    assert isinstance(t, Translation)
    return t


def user_read(mm: AddressSpace, addr: int, n: int, stack_limit: int) -> bytes:
    out = bytearray()
    end = addr + n
    a = addr
    frames = mm.mem.frames
    while a < end:
        pfn = user_access(mm, a, "read", stack_limit)
        assert isinstance(pfn, int)
        off = a & _OFFSET
        take = min(PAGE_SIZE - off, end - a)
        out += frames.read(pfn, off, take)
        a += take
    return bytes(out)


def user_write(mm: AddressSpace, addr: int, data: bytes, stack_limit: int) -> None:
    end = addr + len(data)
    a = addr
    pos = 0
    frames = mm.mem.frames
    while a < end:
        pfn = user_access(mm, a, "write", stack_limit)
        assert isinstance(pfn, int)
        off = a & _OFFSET
        take = min(PAGE_SIZE - off, end - a)
        frames.write(pfn, off, data[pos : pos + take])
        a += take
        pos += take


# ------------------------------------------------------------------ remote access
def _gup_vma(mm: AddressSpace, addr: int, write: bool) -> Vma:
    """check_vma_flags() with FOLL_FORCE: a forced read needs VM_MAYREAD, a forced write
    into a VMA without VM_WRITE only a private (COW) mapping; VM_IO/VM_PFNMAP refuse."""
    vma = mm.tree.lookup(addr)
    if vma is None or vma.flags & (VM_IO | VM_PFNMAP):
        raise oserror(errno.EFAULT)
    if write:
        no_write = not vma.flags & VM_WRITE or vma.flags & VM_SHADOW_STACK
        if no_write and not is_cow_mapping(vma.flags):
            raise oserror(errno.EFAULT)
    elif not vma.flags & VM_READ and not vma.flags & VM_MAYREAD:
        raise oserror(errno.EFAULT)
    return vma


def _gup_page(mm: AddressSpace, addr: int, write: bool) -> int:
    vma = _gup_vma(mm, addr, write)
    for _ in range(3):
        pfn = mm.follow_page(addr, write)
        if pfn is not None:
            gup_touch(mm, addr, pfn, write)
            return pfn
        try:
            handle_mm_fault(mm, vma, addr, write, remote=True)
        except (Segfault, BusError):
            raise oserror(errno.EFAULT) from None
    raise oserror(errno.EFAULT)  # pragma: no cover


def remote_access(mm: AddressSpace, addr: int, data: bytes | None, n: int) -> bytes | int:
    """access_remote_vm(): read ``n`` bytes (``data`` None) or write ``data`` with
    FOLL_FORCE, page by page; stops at the first page that cannot be reached. Returns the
    bytes read or the count written; nothing at all reached is EIO (as /proc/pid/mem)."""
    frames = mm.mem.frames
    write = data is not None
    total = len(data) if data is not None else n
    out = bytearray()
    done = 0
    a = addr
    while done < total:
        try:
            pfn = _gup_page(mm, a, write)
        except OSError:
            break
        off = a & _OFFSET
        take = min(PAGE_SIZE - off, total - done)
        if data is not None:
            frames.write(pfn, off, data[done : done + take])
            if pfn != frames.zero_pfn:
                frames.set_flags(pfn, _DIRTY_FLAG)  # FOLL_TOUCH: set_page_dirty()
        else:
            out += frames.read(pfn, off, take)
        done += take
        a += take
    if not done and total:
        raise oserror(errno.EIO)
    return done if write else bytes(out)


__all__ = [
    "Access",
    "Translation",
    "access_error",
    "do_user_addr_fault",
    "find_vma_for_access",
    "remote_access",
    "translate",
    "user_access",
    "user_read",
    "user_write",
]
