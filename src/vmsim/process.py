"""A simulated process: the syscall surface over its address space and file table.

Each method implements the semantics of the Linux syscall it is named after, taking its
arguments as the kernel sees them (unsigned 64-bit), and raises ``OSError`` with the
kernel's errno, like the ``os`` module.

(Over the project's ~600 lines per module: one method per system call, each a thin entry
point, as the SYSCALL_DEFINE()s of mm/*.c are; the semantics live in ``vmsim.mm``. Splitting
the class would split the syscall table a user reads in one place.)
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import operator
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from vmsim import snapshot
from vmsim.constants import (
    MAP_ANONYMOUS,
    MAP_HUGE_MASK,
    MAP_HUGE_SHIFT,
    MAP_HUGETLB,
    MFD_ALLOW_SEALING,
    MFD_CLOEXEC,
    MFD_EXEC,
    MFD_HUGETLB,
    MFD_NOEXEC_SEAL,
    MLOCK_ONFAULT,
    PAGE_SHIFT,
    PAGE_SIZE,
    PR_GET_MEMORY_MERGE,
    PR_SET_MEMORY_MERGE,
)
from vmsim.errors import BusError, OomKilled, Segfault, oserror
from vmsim.hw.pagetable import WalkStep
from vmsim.loader import load_program
from vmsim.mm import access as _access
from vmsim.mm import hugetlb, madvise, mmap, mprotect, mremap, msync
from vmsim.mm.core import U64, AddressSpace
from vmsim.mm.flags import (
    VM_ACCOUNT,
    VM_DONTCOPY,
    VM_HUGETLB,
    VM_LOCKED,
    VM_LOCKED_MASK,
    VM_LOCKONFAULT,
    VM_WIPEONFORK,
)
from vmsim.mm.memory import copy_page_range, unmap_mapping_pages, vma_needs_copy
from vmsim.mm.mincore import mincore
from vmsim.mm.shm import IPC_RMID, IPC_STAT, ShmidDs, shm_namespace
from vmsim.mm.truncate import drop_cache_pages
from vmsim.mm.vma import AnonVma, Inode, OpenFile
from vmsim.phys.frames import OutOfMemory, PageFlag
from vmsim.procfs import (
    ksm_merging_pages_text,
    ksm_stat_text,
    maps_text,
    pagemap_entries,
    smaps_rollup_text,
    smaps_text,
)

if TYPE_CHECKING:
    from vmsim.loader import LoadedImage
    from vmsim.machine import Machine

U32 = (1 << 32) - 1
# MAP_HUGE_* size logs the kernel has an hstate for: 0 (the default size), 2 MiB, 1 GiB
HUGE_PAGE_SIZE_LOGS = frozenset({0, 21, 30})
DEFAULT_MMAP_BASE = 0x7FFFF7FFF000
_DIRTY_FLAG = int(PageFlag.DIRTY)


F = TypeVar("F", bound=Callable[..., Any])


def running(method: F) -> F:
    """A call that runs as the process (it may fault and allocate): the process must be
    alive; the machine knows whose call it is (the OOM killer does not tear down an address
    space in the middle of its own fault); if the OOM killer chose it, it dies on the way
    out and the caller gets OomKilled."""

    @functools.wraps(method)
    def wrapper(self: Process, *args: Any, **kwargs: Any) -> Any:
        if not self.alive:
            raise ProcessLookupError(f"process {self.pid} has exited")
        mem = self.mm.mem
        prev = mem.task
        mem.task = self.mm
        try:
            out = method(self, *args, **kwargs)
        except (OutOfMemory, OSError, Segfault, BusError):
            # whatever the call ran into (ENOMEM from a populate, a fault), a process the
            # OOM killer chose meanwhile dies on its way back to user space
            if self.oom_killed and self.alive:
                mem.task = prev
                self.exit()
                raise OomKilled(self.pid) from None
            raise
        finally:
            mem.task = prev
        if self.oom_killed and self.alive:
            self.exit()
            raise OomKilled(self.pid)
        return out

    return wrapper  # type: ignore[return-value]


def _s32(x: int) -> int:
    x &= U32
    return x - (1 << 32) if x & (1 << 31) else x


_REG_MIN = -(1 << 63)


def _reg(value: int, name: str) -> int:
    """A syscall argument as it reaches the kernel: one 64-bit register.

    A C caller cannot pass more than 64 bits, so a Python int outside
    ``-2**63 .. 2**64 - 1`` is refused with OverflowError (as the os module refuses what does
    not fit a C type); a negative value is the register's two's complement (C's ``-1`` for a
    ``size_t`` is ``2**64 - 1``). The callers then read it as the kernel's parameter type:
    ``& U64`` for unsigned long, the low 32 bits (``_s32`` or ``& U32``) for int.
    """
    if type(value) is int and 0 <= value <= U64:
        return value  # the common case: already a register's value
    value = operator.index(value)
    if not _REG_MIN <= value <= U64:
        raise OverflowError(
            f"{name}={value} does not fit a 64-bit syscall argument "
            "(0 .. 2**64-1, or a negative C long)"
        )
    return value & U64


def _count(n: int, name: str = "n") -> int:
    """A byte count for a user access: 0 or more."""
    n = operator.index(n)
    if n < 0:
        raise ValueError(f"{name} must be >= 0, got {n}")
    return n


class Process:
    """One process: ``pid``, its ``mm`` (AddressSpace) and its open files."""

    def __init__(self, machine: Machine, pid: int, mm: AddressSpace) -> None:
        self.machine = machine
        self.pid = pid
        self.mm = mm
        self.files: dict[int, OpenFile] = {}
        self.images: list[LoadedImage] = []  # ELF images the last execve loaded
        self.alive = True
        self.oom_score_adj = 0  # /proc/<pid>/oom_score_adj: -1000 (never) .. 1000
        self.oom_killed = False

    # ------------------------------------------------------------ mm syscalls
    @running
    def mmap(
        self, addr: int, length: int, prot: int, flags: int, fd: int = -1, offset: int = 0
    ) -> int:
        """mmap(2): returns the address of the new mapping."""
        addr = _reg(addr, "addr")
        length = _reg(length, "length")
        offset = _reg(offset, "offset")
        prot = _reg(prot, "prot") & U32
        flags = _reg(flags, "flags") & U32
        fd = _s32(_reg(fd, "fd"))
        if offset & (PAGE_SIZE - 1):
            raise oserror(errno.EINVAL)
        file = None
        mem = self.mm.mem
        if not (flags & MAP_ANONYMOUS):
            file = self.files.get(fd)
            if file is None:
                raise oserror(errno.EBADF)
            if file.inode.huge_shift:  # ksys_mmap_pgoff(): is_file_hugepages()
                size = 1 << file.inode.huge_shift
                length = (length + size - 1) & ~(size - 1) & U64
            elif flags & MAP_HUGETLB:
                raise oserror(errno.EINVAL)
        elif flags & MAP_HUGETLB:
            # hstate_sizelog(): only the huge page sizes of x86-64 (2 MiB, 1 GiB) exist
            assert mem.hugetlb is not None
            h = hugetlb.hstate_sizelog(mem.hugetlb, (flags >> MAP_HUGE_SHIFT) & MAP_HUGE_MASK)
            if h is None:
                raise oserror(errno.EINVAL)
            length = (length + h.size - 1) & ~(h.size - 1) & U64  # ALIGN(len, huge size)
            # hugetlb_file_setup(HUGETLB_ANON_FILE, len, VM_NORESERVE, ...): the mmap
            # below reserves (hugetlbfs_file_mmap())
            file = hugetlb.hugetlb_file_setup(
                mem, "/anon_hugepage", length, h, self.machine._next_ino()
            )
        mm = self.mm
        result, populate = mmap.do_mmap(
            mm, addr, length, prot, flags, file, offset >> PAGE_SHIFT, self.machine._shmem_file
        )
        if populate:
            mm.populate(result, result + populate, ignore_errors=True)
        return result

    @running
    def munmap(self, addr: int, length: int) -> None:
        mmap.do_munmap_syscall(self.mm, _reg(addr, "addr"), _reg(length, "length"))

    @running
    def mprotect(self, addr: int, length: int, prot: int) -> None:
        mprotect.do_mprotect(
            self.mm, _reg(addr, "addr"), _reg(length, "length"), _reg(prot, "prot") & U32
        )

    @running
    def mremap(
        self, old_addr: int, old_size: int, new_size: int, flags: int = 0, new_addr: int = 0
    ) -> int:
        return mremap.do_mremap(
            self.mm,
            _reg(old_addr, "old_addr"),
            _reg(old_size, "old_size"),
            _reg(new_size, "new_size"),
            _reg(flags, "flags"),
            _reg(new_addr, "new_addr"),
        )

    @running
    def msync(self, addr: int, length: int, flags: int) -> None:
        """msync(2): MS_ASYNC, MS_SYNC, MS_INVALIDATE (see vmsim.mm.msync for the errnos)."""
        msync.do_msync(
            self.mm, _reg(addr, "addr"), _reg(length, "length"), _s32(_reg(flags, "flags"))
        )

    @running
    def madvise(self, addr: int, length: int, advice: int) -> None:
        madvise.do_madvise(
            self.mm, _reg(addr, "addr"), _reg(length, "length"), _s32(_reg(advice, "advice"))
        )

    @running
    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        """prctl(2), the per-process KSM options (kernel/sys.c): PR_SET_MEMORY_MERGE with
        arg2 != 0 is ksm_enable_merge_any() (every compatible VMA, and every later one,
        VM_MERGEABLE), with arg2 == 0 ksm_disable_merge_any() (unmerge, clear the flag);
        PR_GET_MEMORY_MERGE returns 1 or 0. Unused arguments must be 0 (EINVAL); any other
        option is EINVAL here."""
        option = _s32(_reg(option, "option"))
        args = [
            _reg(a, n) for a, n in ((arg2, "arg2"), (arg3, "arg3"), (arg4, "arg4"), (arg5, "arg5"))
        ]
        ksm = self.mm.mem.ksm
        assert ksm is not None
        if option == PR_SET_MEMORY_MERGE:
            if args[1] or args[2] or args[3]:
                raise oserror(errno.EINVAL)
            if args[0]:
                ksm.enable_merge_any(self.mm)
            else:
                ksm.disable_merge_any(self.mm)
            return 0
        if option == PR_GET_MEMORY_MERGE:
            if any(args):
                raise oserror(errno.EINVAL)
            st = ksm.per_mm.get(self.mm.serial)
            return int(st is not None and st.merge_any)
        raise oserror(errno.EINVAL)

    @running
    def mlock(self, addr: int, length: int) -> None:
        mprotect.do_mlock(self.mm, _reg(addr, "addr"), _reg(length, "length"), VM_LOCKED)

    @running
    def mlock2(self, addr: int, length: int, flags: int = 0) -> None:
        addr, length, flags = _reg(addr, "addr"), _reg(length, "length"), _reg(flags, "flags")
        flags = _s32(flags)
        if flags & ~MLOCK_ONFAULT:
            raise oserror(errno.EINVAL)
        lockflags = VM_LOCKED | (VM_LOCKONFAULT if flags & MLOCK_ONFAULT else 0)
        mprotect.do_mlock(self.mm, addr, length, lockflags)

    @running
    def mlockall(self, flags: int) -> None:
        """mlockall(2): MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT."""
        mprotect.do_mlockall(self.mm, _s32(_reg(flags, "flags")))

    @running
    def munlockall(self) -> None:
        mprotect.do_munlockall(self.mm)

    @running
    def munlock(self, addr: int, length: int) -> None:
        mprotect.do_munlock(self.mm, _reg(addr, "addr"), _reg(length, "length"))

    @running
    def mseal(self, addr: int, length: int, flags: int = 0) -> None:
        mprotect.do_mseal(self.mm, _reg(addr, "addr"), _reg(length, "length"), _reg(flags, "flags"))

    @running
    def brk(self, addr: int) -> int:
        return mmap.do_brk(self.mm, _reg(addr, "addr"))

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
        if flags & MFD_HUGETLB:
            allowed |= MAP_HUGE_MASK << MAP_HUGE_SHIFT  # the huge page size (MFD_HUGE_*)
        if flags & ~allowed & U32 or len(name.encode()) > 249:
            raise oserror(errno.EINVAL)
        if flags & MFD_HUGETLB:
            # hugetlb_file_setup(name, 0, VM_NORESERVE, ...): an unknown size is ENODEV
            mem = self.mm.mem
            assert mem.hugetlb is not None
            h = hugetlb.hstate_sizelog(mem.hugetlb, (flags >> MAP_HUGE_SHIFT) & MAP_HUGE_MASK)
            if h is None:
                raise oserror(errno.ENODEV)
            f = hugetlb.hugetlb_file_setup(mem, "/memfd:" + name, 0, h, self.machine._next_ino())
            return self._new_fd(f)
        inode = Inode(
            "/memfd:" + name, dev=(0, 1), ino=self.machine._next_ino(), shmem=True, deleted=True
        )
        return self._new_fd(OpenFile(inode))

    def open_inode(self, inode: Inode, writable: bool = True, readable: bool = True) -> int:
        """Open an existing inode (a file of the simulated machine) as a new description."""
        return self._new_fd(OpenFile(inode, readable=readable, writable=writable))

    @running
    def ftruncate(self, fd: int, size: int) -> None:
        f = self.files.get(_s32(_reg(fd, "fd")))
        if f is None:
            raise oserror(errno.EBADF)
        size = _reg(size, "length")  # off_t: a signed long
        if size >= 1 << 63:
            raise oserror(errno.EINVAL)
        if not f.writable:
            raise oserror(errno.EINVAL)
        inode = f.inode
        if inode.huge_shift:  # hugetlbfs_setattr()
            hugetlb.hugetlb_vmtruncate(self.mm.mem, inode, size)
            return
        old_size = inode.size
        # shmem_setattr() truncates for newsize <= oldsize: the same size still zeroes and
        # dirties the partial last page
        if size < old_size or (inode.shmem and size == old_size):
            # truncate_pagecache(): unmap from every mapping, private copies included
            # (even_cows), drop the page cache past the new end, zero the partial page
            keep = (size + PAGE_SIZE - 1) >> PAGE_SHIFT
            mem = self.mm.mem
            last = max(
                max(inode.pages, default=-1) + 1,
                max(inode.backing, default=-1) + 1,
                max(inode.swapped, default=-1) + 1,
                keep,
            )
            # unmap_mapping_range(holebegin, holelen 0, even_cows): every offset from the new
            # end on, private copies included, wherever a mapping reaches (a copy made when
            # the file was longer lies beyond anything the page cache still holds)
            unmap_mapping_pages(list(mem.mms.values()), inode, keep, 1 << 52, even_cows=True)
            drop_cache_pages(mem, inode, keep, last + 1)
            tail = size & (PAGE_SIZE - 1)
            if tail:
                pg = size >> PAGE_SHIFT
                if pg in inode.pages:  # shmem_undo_range(): zeroed and dirtied
                    mem.frames.write(inode.pages[pg], tail, bytes(PAGE_SIZE - tail))
                    mem.frames.set_flags(inode.pages[pg], _DIRTY_FLAG)
                if pg in inode.backing:
                    inode.backing[pg] = inode.backing[pg][:tail] + bytes(PAGE_SIZE - tail)
        inode.size = size

    def close(self, fd: int) -> None:
        f = self.files.pop(_s32(fd), None)
        if f is None:
            raise oserror(errno.EBADF)
        self.machine._release_inode(f.inode)

    # ----------------------------------------------------------- user access
    def _check_alive(self) -> None:
        if not self.alive:
            raise ProcessLookupError(f"process {self.pid} has exited")

    @running
    def read(self, addr: int, n: int) -> bytes:
        """Read ``n`` bytes as the process would (raises Segfault / BusError)."""
        self._check_alive()
        addr, n = _reg(addr, "addr"), _count(n)
        return _access.user_read(self.mm, addr, n, self.machine.stack_limit)

    @running
    def write(self, addr: int, data: bytes) -> None:
        """Store ``data`` as the process would (raises Segfault / BusError)."""
        self._check_alive()
        _access.user_write(self.mm, _reg(addr, "addr"), bytes(data), self.machine.stack_limit)

    @running
    def translate(self, addr: int, access: str = "read") -> _access.Translation:
        """One user access ("read", "write" or "exec") to ``addr`` through the TLB and the
        page tables, faulting as needed: the physical address, page size, the entry at each
        level, whether the TLB (and which level) or a page walk answered."""
        self._check_alive()
        if access not in ("read", "write", "exec"):
            raise ValueError(f"access must be read, write or exec, not {access!r}")
        return _access.translate(
            self.mm,
            _reg(addr, "addr"),
            access,  # type: ignore[arg-type]
            self.machine.stack_limit,
        )

    @running
    def peek(self, addr: int, n: int) -> bytes:
        """Read another process's memory like /proc/<pid>/mem or PTRACE_PEEKDATA
        (FOLL_FORCE: read-protected but readable-in-principle pages too). Stops at the first
        unreachable page; nothing readable at all is EIO."""
        self._check_alive()
        out = _access.remote_access(self.mm, _reg(addr, "addr"), None, _count(n))
        assert isinstance(out, bytes)
        return out

    @running
    def poke(self, addr: int, data: bytes) -> int:
        """Write into another process's memory like /proc/<pid>/mem or PTRACE_POKEDATA: a
        write into a read-only private mapping breaks COW (the file is left untouched).
        Returns the bytes written; nothing written at all is EIO."""
        self._check_alive()
        out = _access.remote_access(self.mm, _reg(addr, "addr"), bytes(data), len(data))
        assert isinstance(out, int)
        return out

    def pagemap(self, addr: int, npages: int) -> list[int]:
        """/proc/<pid>/pagemap entries for ``npages`` pages from ``addr`` (as root: with
        frame numbers)."""
        return pagemap_entries(
            self.mm, _reg(addr, "addr") & ~(PAGE_SIZE - 1), _count(npages, "npages")
        )

    def pte(self, addr: int) -> int:
        """The raw leaf page-table entry covering ``addr`` (0 if there is none), read without
        an access: no fault, no accessed bit set, the way a debugger or ptdump reads the
        tables (mirrors follow_pte() in mm/memory.c). Decode it with ``vmsim.hw.pte.decode``."""
        leaf = self.mm.pt.get(addr & U64)
        return leaf.entry if leaf is not None else 0

    def page_walk(self, addr: int) -> list[WalkStep]:
        """Every entry a hardware walk of ``addr`` reads, top level first (``step.level``
        5 or 4 down to 1, ``step.idx`` the 9-bit index, ``step.entry`` the raw entry),
        ending at a leaf or at the first none entry. Read without an access, like
        :meth:`pte`. ValueError for an address that is not canonical."""
        return self.mm.pt.walk(addr & U64)

    @property
    def paging_levels(self) -> int:
        """4, or 5 with 5-level paging (CR4.LA57): the depth of this process's page tables."""
        return self.mm.pt.levels

    def mincore(self, addr: int, length: int) -> bytes:
        """mincore(2): one byte per page, 1 if resident. EINVAL for an unaligned start,
        ENOMEM if the range is not fully mapped."""
        return mincore(self.mm, _reg(addr, "addr"), _reg(length, "length"))

    def smaps_rollup(self) -> str:
        """/proc/<pid>/smaps_rollup."""
        return smaps_rollup_text(self.mm)

    @property
    def stats(self) -> dict[str, int]:
        """Fault and translation counters of this process (min_flt = pgfault - pgmajfault),
        with the TLB counters of the machine's CPU for its PCID's share of the work."""
        d = self.mm.stats.as_dict()
        d["minflt"] = d["pgfault"] - d["pgmajfault"]
        d["majflt"] = d["pgmajfault"]
        return d

    # ------------------------------------------------------- SysV shared memory
    def shmget(self, key: int, size: int, shmflg: int) -> int:
        """shmget(2): see :mod:`vmsim.mm.shm`."""
        return shm_namespace(self.machine).shmget(self.machine, key, size, shmflg)

    @running
    def shmat(self, shmid: int, shmaddr: int = 0, shmflg: int = 0) -> int:
        """shmat(2): map SysV segment ``shmid``; returns its address."""
        self._check_alive()
        return shm_namespace(self.machine).shmat(self, _s32(shmid), shmaddr, shmflg)

    @running
    def shmdt(self, shmaddr: int) -> None:
        """shmdt(2): unmap the attach that starts at ``shmaddr``."""
        self._check_alive()
        shm_namespace(self.machine).shmdt(self, shmaddr)

    def shmctl(self, shmid: int, cmd: int) -> ShmidDs | None:
        """shmctl(2): IPC_RMID, and IPC_STAT (returns the :class:`ShmidDs` fields the model
        knows: key, mode, size, nattch); other commands: EINVAL here."""
        ns = shm_namespace(self.machine)
        if cmd == IPC_STAT:
            return ns.stat(self.machine, _s32(shmid))
        if cmd != IPC_RMID:
            raise oserror(errno.EINVAL, detail="only IPC_RMID and IPC_STAT are modelled")
        ns.rmid(self.machine, _s32(shmid))
        return None

    # ------------------------------------------------------------ processes
    @running
    def execve(self, path: str | None = None, cwd: str | Path = ".") -> list[str]:
        """execve(2): a fresh address space. With ``path``, the layout the kernel's ELF
        loader builds for that binary (and its interpreter); without, the usual layout of
        a fresh process. Returns notes on what was estimated."""
        self._check_alive()
        old = self.mm
        self.mm = AddressSpace(old.cfg, DEFAULT_MMAP_BASE)
        ksm = old.mem.ksm
        if ksm is not None:
            ksm.execve(self.mm, old)  # MMF_VM_MERGE_ANY survives exec (ksm_execve())
        self._drop_mm(old)
        if path is None:
            snapshot.build(self.mm, snapshot.parse(snapshot.LINUX_LAYOUT))
            return ["layout: the usual fresh-process layout (no binary given)"]
        return load_program(self, path, Path(cwd))

    def _drop_mm(self, mm: AddressSpace) -> None:
        """mmput(): the last user of ``mm`` is gone (threads sharing it keep it alive)."""
        if any(p.mm is mm for p in self.machine.processes if p is not self and p.alive):
            return
        files = {v.file.inode for v in mm.tree if v.file is not None}
        if mm.mem.ksm is not None:
            mm.mem.ksm.exit_mm(mm)  # ksm_exit(), before exit_mmap()
        mm.destroy()
        for inode in files:
            self.machine._release_inode(inode)

    def exit(self) -> None:
        """exit(2): the address space goes (every frame it alone used is freed), then the
        files; the process leaves the machine's process list."""
        if not self.alive:
            return
        self.alive = False
        self._drop_mm(self.mm)
        files = [f.inode for f in self.files.values()]
        self.files = {}
        for inode in files:
            self.machine._release_inode(inode)
        if self in self.machine.processes:
            self.machine.processes.remove(self)

    @running
    def fork(self) -> Process:
        """fork(2) (dup_mmap()): VM_DONTCOPY areas are skipped, locks are not inherited,
        each VMA with an anon_vma gets a new one whose chain links the parent's (so it is no
        longer singular); page tables of VMAs with anonymous pages are copied with
        copy-on-write (VM_WIPEONFORK areas start empty), the parent's TLB is flushed."""
        self._check_alive()
        parent = self.mm
        child_mm = AddressSpace(parent.cfg, parent.mmap_base, parent.mmap_legacy_base)
        child_mm.start_brk, child_mm.brk = parent.start_brk, parent.brk
        child_mm.start_stack = parent.start_stack
        try:
            for v in parent.tree:
                if v.flags & VM_DONTCOPY:
                    continue
                c = v.copy()
                c.flags &= ~VM_LOCKED_MASK
                # dup_mmap(): an accountable VMA is charged again (overcommit may refuse)
                if c.flags & VM_ACCOUNT and not child_mm.vm_enough_memory(c.pages):
                    raise OutOfMemory(0, 0, 0)
                child_mm.tree.insert_new(c)
                if v.flags & VM_WIPEONFORK:
                    c.anon_vma = None
                    c.anon_singular = True
                    continue
                if v.anon_vma is not None:
                    c.anon_vma = AnonVma(v.anon_vma)
                    c.anon_singular = False
                if v.flags & VM_HUGETLB:  # copy_page_range() -> copy_hugetlb_page_range()
                    if vma_needs_copy(v):
                        hugetlb.copy_hugetlb_page_range(child_mm, parent, v)
                elif vma_needs_copy(v):
                    copy_page_range(child_mm, parent, v)
                # guard markers are PTEs: copied with the page tables
                for k in parent.guards.irange(v.start >> PAGE_SHIFT, (v.end >> PAGE_SHIFT) - 1):
                    child_mm.guards[k] = True
        except OutOfMemory:
            # dup_mmap() failed: the half-built child goes (exit_mmap), fork() is ENOMEM
            child_mm.destroy()
            parent.mem.cpu.flush_mm(parent)
            if self.oom_killed:
                raise
            raise oserror(errno.ENOMEM) from None
        parent.mem.cpu.flush_mm(parent)
        ksm = parent.mem.ksm
        if ksm is not None:
            ksm.fork(child_mm, parent)  # ksm_fork()
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

    @running
    def ksm_stat(self) -> str:
        """/proc/PID/ksm_stat."""
        return ksm_stat_text(self.mm)

    @running
    def ksm_merging_pages(self) -> str:
        """/proc/PID/ksm_merging_pages."""
        return ksm_merging_pages_text(self.mm)

    def smaps(self) -> str:
        """/proc/<pid>/smaps."""
        return smaps_text(self.mm, pkeys=self.machine.pkeys, gate=self.machine.vsyscall)

    def __repr__(self) -> str:
        return f"Process(pid={self.pid}, map_count={self.map_count})"


__all__ = [
    "DEFAULT_MMAP_BASE",
    "HUGE_PAGE_SIZE_LOGS",
    "U32",
    "Process",
    "running",
]
