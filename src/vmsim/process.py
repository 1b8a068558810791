"""A simulated process: the syscall surface over its address space and file table.

Each method implements the semantics of the Linux syscall it is named after, taking its
arguments as the kernel sees them (unsigned 64-bit), and raises ``OSError`` with the
kernel's errno, like the ``os`` module.
"""

from __future__ import annotations

import dataclasses
import errno
from pathlib import Path
from typing import TYPE_CHECKING

from vmsim.constants import (
    MAP_ANONYMOUS,
    MAP_HUGETLB,
    MFD_ALLOW_SEALING,
    MFD_CLOEXEC,
    MFD_EXEC,
    MFD_HUGETLB,
    MFD_NOEXEC_SEAL,
    MLOCK_ONFAULT,
    PAGE_SHIFT,
    PAGE_SIZE,
)
from vmsim.errors import oserror
from vmsim.mm import access, madvise, mmap, mprotect, mremap
from vmsim.mm.core import U64, AddressSpace
from vmsim.mm.flags import VM_DONTCOPY, VM_LOCKED, VM_LOCKED_MASK, VM_LOCKONFAULT, VM_WIPEONFORK
from vmsim.mm.vma import AnonVma, Inode, OpenFile
from vmsim.procfs import maps_text, smaps_text

if TYPE_CHECKING:
    from vmsim.loader import LoadedImage
    from vmsim.machine import Machine

U32 = (1 << 32) - 1
DEFAULT_MMAP_BASE = 0x7FFFF7FFF000


def _s32(x: int) -> int:
    x &= U32
    return x - (1 << 32) if x & (1 << 31) else x


class Process:
    """One process: ``pid``, its ``mm`` (AddressSpace) and its open files."""

    def __init__(self, machine: Machine, pid: int, mm: AddressSpace) -> None:
        self.machine = machine
        self.pid = pid
        self.mm = mm
        self.files: dict[int, OpenFile] = {}
        self.images: list[LoadedImage] = []  # ELF images the last execve loaded

    # ------------------------------------------------------------ mm syscalls
    def mmap(
        self, addr: int, length: int, prot: int, flags: int, fd: int = -1, offset: int = 0
    ) -> int:
        """mmap(2): returns the address of the new mapping."""
        addr &= U64
        length &= U64
        offset &= U64
        prot &= U32
        flags &= U32
        if offset & (PAGE_SIZE - 1):
            raise oserror(errno.EINVAL)
        file = None
        if not (flags & MAP_ANONYMOUS):
            file = self.files.get(_s32(fd))
            if file is None:
                raise oserror(errno.EBADF)
            if flags & MAP_HUGETLB:
                raise oserror(errno.EINVAL)
        elif flags & MAP_HUGETLB:
            # no huge pages are reserved on the modelled machine (nr_hugepages = 0)
            raise oserror(errno.ENOMEM)
        mm = self.mm
        result, populate = mmap.do_mmap(
            mm, addr, length, prot, flags, file, offset >> PAGE_SHIFT, self.machine._shmem_file
        )
        if populate:
            mm.populate(result, result + populate, ignore_errors=True)
        return result

    def munmap(self, addr: int, length: int) -> None:
        mmap.do_munmap_syscall(self.mm, addr & U64, length & U64)

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        mprotect.do_mprotect(self.mm, addr & U64, length & U64, prot & U32)

    def mremap(
        self, old_addr: int, old_size: int, new_size: int, flags: int = 0, new_addr: int = 0
    ) -> int:
        return mremap.do_mremap(
            self.mm, old_addr & U64, old_size & U64, new_size & U64, flags & U64, new_addr & U64
        )

    def madvise(self, addr: int, length: int, advice: int) -> None:
        madvise.do_madvise(self.mm, addr & U64, length & U64, _s32(advice))

    def mlock(self, addr: int, length: int) -> None:
        mprotect.do_mlock(self.mm, addr & U64, length & U64, VM_LOCKED)

    def mlock2(self, addr: int, length: int, flags: int = 0) -> None:
        if flags & ~MLOCK_ONFAULT:
            raise oserror(errno.EINVAL)
        lockflags = VM_LOCKED | (VM_LOCKONFAULT if flags & MLOCK_ONFAULT else 0)
        mprotect.do_mlock(self.mm, addr & U64, length & U64, lockflags)

    def mlockall(self, flags: int) -> None:
        """mlockall(2): MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT."""
        mprotect.do_mlockall(self.mm, _s32(flags))

    def munlockall(self) -> None:
        mprotect.do_munlockall(self.mm)

    def munlock(self, addr: int, length: int) -> None:
        mprotect.do_munlock(self.mm, addr & U64, length & U64)

    def mseal(self, addr: int, length: int, flags: int = 0) -> None:
        mprotect.do_mseal(self.mm, addr & U64, length & U64, flags & U64)

    def brk(self, addr: int) -> int:
        return mmap.do_brk(self.mm, addr & U64)

    # ------------------------------------------------------------------ files
    def _new_fd(self, f: OpenFile) -> int:
        fd = 3
        while fd in self.files:
            fd += 1
        self.files[fd] = f
        return fd

    def memfd_create(self, name: str, flags: int = 0) -> int:
        """memfd_create(2): an anonymous tmpfs file shown as ``/memfd:NAME (deleted)``."""
        allowed = MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB | MFD_NOEXEC_SEAL | MFD_EXEC
        if flags & ~allowed & U32 or len(name.encode()) > 249:
            raise oserror(errno.EINVAL)
        if flags & MFD_HUGETLB:
            raise oserror(errno.EINVAL)
        inode = Inode(
            "/memfd:" + name, dev=(0, 1), ino=self.machine._next_ino(), shmem=True, deleted=True
        )
        return self._new_fd(OpenFile(inode))

    def open_inode(self, inode: Inode, writable: bool = True, readable: bool = True) -> int:
        """Open an existing inode (a file of the simulated machine) as a new description."""
        return self._new_fd(OpenFile(inode, readable=readable, writable=writable))

    def ftruncate(self, fd: int, size: int) -> None:
        f = self.files.get(_s32(fd))
        if f is None:
            raise oserror(errno.EBADF)
        if size < 0 or size >= 1 << 63:
            raise oserror(errno.EINVAL)
        if not f.writable:
            raise oserror(errno.EINVAL)
        inode = f.inode
        old_size = inode.size
        if size < inode.size:
            keep = (size + PAGE_SIZE - 1) >> PAGE_SHIFT
            for pg in [p for p in inode.pages if p >= keep]:
                del inode.pages[pg]
            tail = size & (PAGE_SIZE - 1)
            if tail and (size >> PAGE_SHIFT) in inode.pages:
                page = inode.pages[size >> PAGE_SHIFT]
                page[tail:] = bytes(PAGE_SIZE - tail)
        inode.size = size
        if size < old_size:
            self.machine._truncate_cows(inode, (size + PAGE_SIZE - 1) >> PAGE_SHIFT)

    def close(self, fd: int) -> None:
        if self.files.pop(_s32(fd), None) is None:
            raise oserror(errno.EBADF)

    # ----------------------------------------------------------- user access
    def read(self, addr: int, n: int) -> bytes:
        """Read ``n`` bytes as the process would (raises Segfault / BusError)."""
        return access.user_read(self.mm, addr & U64, n, self.machine.stack_limit)

    def write(self, addr: int, data: bytes) -> None:
        """Store ``data`` as the process would (raises Segfault / BusError)."""
        access.user_write(self.mm, addr & U64, bytes(data), self.machine.stack_limit)

    # ------------------------------------------------------------ processes
    def execve(self, path: str | None = None, cwd: str | Path = ".") -> list[str]:
        """execve(2): a fresh address space. With ``path``, the layout the kernel's ELF
        loader builds for that binary (and its interpreter); without, the usual layout of
        a fresh process. Returns notes on what was estimated."""
        from vmsim import snapshot
        from vmsim.loader import load_program

        old = self.mm
        self.mm = AddressSpace(old.cfg, DEFAULT_MMAP_BASE)
        if path is None:
            snapshot.build(self.mm, snapshot.parse(snapshot.LINUX_LAYOUT))
            return ["layout: the usual fresh-process layout (no binary given)"]
        return load_program(self, path, Path(cwd))

    def fork(self) -> Process:
        """fork(2) at the VMA level (dup_mmap()): VM_DONTCOPY areas are skipped, locks are
        not inherited, each VMA with an anon_vma gets a new one whose chain links the
        parent's (so it is no longer singular). Private pages are copied eagerly."""
        parent = self.mm
        child_mm = AddressSpace(parent.cfg, parent.mmap_base, parent.mmap_legacy_base)
        child_mm.start_brk, child_mm.brk = parent.start_brk, parent.brk
        child_mm.start_stack = parent.start_stack
        for v in parent.tree:
            if v.flags & VM_DONTCOPY:
                continue
            c = v.copy()
            c.flags &= ~VM_LOCKED_MASK
            if v.flags & VM_WIPEONFORK:
                c.anon_vma = None
                c.anon_singular = True
            elif v.anon_vma is not None:
                c.anon_vma = AnonVma()
                c.anon_singular = False
                lo, hi = v.start >> PAGE_SHIFT, (v.end >> PAGE_SHIFT) - 1
                for k in parent.pages.irange(lo, hi):
                    child_mm.pages[k] = bytearray(parent.pages[k])
            for k in parent.guards.irange(v.start >> PAGE_SHIFT, (v.end >> PAGE_SHIFT) - 1):
                child_mm.guards[k] = True
            child_mm.tree.insert_new(c)
        child = self.machine._adopt(child_mm)
        child.files = dict(self.files)
        child.images = [dataclasses.replace(img) for img in self.images]
        return child

    # ------------------------------------------------------------- /proc view
    @property
    def map_count(self) -> int:
        return self.mm.map_count

    def maps(self) -> str:
        """/proc/<pid>/maps."""
        return maps_text(self.mm, gate=self.machine.vsyscall)

    def smaps(self) -> str:
        """/proc/<pid>/smaps (page counters are 0 until page tables are modelled)."""
        return smaps_text(self.mm, pkeys=self.machine.pkeys, gate=self.machine.vsyscall)

    def __repr__(self) -> str:
        return f"Process(pid={self.pid}, map_count={self.map_count})"
