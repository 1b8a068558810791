"""SysV shared memory (ipc/shm.c): shmget(2), shmat(2), shmdt(2), shmctl(IPC_RMID).

A segment is a tmpfs file the kernel creates unlinked (shmem_kernel_file_setup()), named
``SYSV%08x`` after its key, with its inode number set to the shmid: /proc/PID/maps shows an
attach as ``/SYSV0020c491 (deleted)`` (dev 00:01, offset 0) from the first shmat on, whether
or not IPC_RMID has been called (checked on Linux 6.18). Each shmat maps the segment through
a file of its own (shm_file_operations wraps one per attach), so two attaches never merge.

``shm_nattch`` is one count per VMA that maps the segment, in every process: the kernel's
vm_ops->open (shm_open()) counts each new one (an attach, each VMA fork copies, the new half
of a split, mremap's copy) and vm_ops->close (shm_close()) each one unmapped (shmdt, munmap,
exit, exec, the old VMA of a move); shm VMAs never merge away (can_merge_remove_vma(): they
have a close), so the model counts the VMAs mapping the segment's file
(:meth:`ShmNamespace.nattch`) rather than following each open and close. A segment marked
IPC_RMID is destroyed when that count reaches 0 (shm_may_destroy() -> shm_destroy()): the
machine asks :meth:`ShmNamespace.holds` each time a VMA of a deleted file goes.

Not modelled: permissions (ipcperms(): the model runs as root), SHM_LOCK, the pids and times
of ``struct shmid_ds``, kernel.shm_rmid_forced (0: orphaned segments stay), and the
shmmax/shmall/shmmni sysctls beyond their defaults.
"""

from __future__ import annotations

import errno
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vmsim.constants import MAP_FIXED, MAP_SHARED, PAGE_SIZE, PROT_EXEC, PROT_READ, PROT_WRITE
from vmsim.errors import oserror
from vmsim.mm import hugetlb
from vmsim.mm.vma import Inode

if TYPE_CHECKING:
    from vmsim.machine import Machine
    from vmsim.process import Process

__all__ = [
    "IPC_CREAT",
    "IPC_EXCL",
    "IPC_PRIVATE",
    "IPC_RMID",
    "IPC_STAT",
    "SHMLBA",
    "SHM_DEST",
    "SHM_EXEC",
    "SHM_RDONLY",
    "SHM_REMAP",
    "SHM_RND",
    "ShmNamespace",
    "ShmSegment",
    "ShmidDs",
    "shm_namespace",
]

# include/uapi/linux/ipc.h and shm.h (octal there)
IPC_PRIVATE = 0
IPC_CREAT = 0o1000
IPC_EXCL = 0o2000
IPC_RMID = 0
IPC_STAT = 2
SHM_DEST = 0o1000  # in shm_perm.mode: IPC_RMID was called, destroyed at the last detach
SHM_RDONLY = 0o10000
SHM_RND = 0o20000
SHM_REMAP = 0o40000
SHM_EXEC = 0o100000
SHM_HUGETLB = 0o4000
SHM_NORESERVE = 0o10000  # with SHM_HUGETLB: no reservation at shmget
SHM_HUGE_SHIFT, SHM_HUGE_MASK = 26, 0x3F
SHMLBA = PAGE_SIZE  # x86
SHMMIN = 1
SHMMAX = (1 << 64) - 1 - (1 << 24)  # ULONG_MAX - (1UL << 24), the default kernel.shmmax
U64 = (1 << 64) - 1


@dataclass(eq=False)
class ShmSegment:
    """``struct shmid_kernel``: its id, key, size (bytes, as asked) and tmpfs file."""

    shmid: int
    key: int
    size: int
    inode: Inode
    removed: bool = False
    """IPC_RMID was called (SHM_DEST): destroyed at the last detach; its key is private."""


@dataclass(frozen=True)
class ShmidDs:
    """What shmctl(IPC_STAT) fills in (``struct shmid64_ds``), the fields the model knows:
    the key (IPC_PRIVATE once removed), the mode bits (SHM_DEST once removed), the size
    asked for and the number of attached VMAs."""

    key: int
    mode: int
    segsz: int
    nattch: int


@dataclass
class ShmNamespace:
    """The SysV shm ids of one IPC namespace (``shm_ids(ns)``)."""

    segments: dict[int, ShmSegment] = field(default_factory=dict)
    next_id: int = 0
    files: dict[Inode, ShmSegment] = field(default_factory=dict)
    """Every segment's file, destroyed ones included: an attach outlives IPC_RMID (shmdt
    recognises it by its vm_ops, not by its id)."""

    def shmget(
        self, machine: Machine, key: int, size: int, shmflg: int, shmid: int | None = None
    ) -> int:
        """ksys_shmget() -> ipcget(): a new segment for IPC_PRIVATE or an unknown key with
        IPC_CREAT; the existing one for a known key (EEXIST with IPC_CREAT|IPC_EXCL, EINVAL
        when it is smaller than ``size``). ``shmid`` forces the id (a replay uses the
        recorded one)."""
        key &= 0xFFFFFFFF
        if key != IPC_PRIVATE:
            for seg in self.segments.values():
                if seg.key == key and not seg.removed:
                    if shmflg & IPC_CREAT and shmflg & IPC_EXCL:
                        raise oserror(errno.EEXIST)
                    if size > seg.size:
                        raise oserror(errno.EINVAL)  # shm_more_checks()
                    return seg.shmid
            if not shmflg & IPC_CREAT:
                raise oserror(errno.ENOENT)
        # newseg()
        if size < SHMMIN or size > SHMMAX:
            raise oserror(errno.EINVAL)
        if shmflg & SHM_HUGETLB:
            inode = self._hugetlb_file(machine, key, size, shmflg)
        if shmid is None:
            shmid = self.next_id
        self.next_id = max(self.next_id, shmid + 1)
        if not shmflg & SHM_HUGETLB:
            inode = Inode(
                f"/SYSV{key:08x}",
                dev=(0, 1),
                ino=shmid,
                size=size,
                shmem=True,
                deleted=True,
            )
        seg = self.segments[shmid] = ShmSegment(shmid, key, size, inode)
        self.files[inode] = seg
        return shmid

    @staticmethod
    def _hugetlb_file(machine: Machine, key: int, size: int, shmflg: int) -> Inode:
        """newseg() with SHM_HUGETLB: hstate_sizelog() of the SHM_HUGE_* bits (EINVAL if
        unknown), the size rounded up to it, hugetlb_file_setup(HUGETLB_SHMFS_INODE): the
        pages are reserved now unless SHM_NORESERVE (ENOMEM if the pool cannot), and the
        attaches reserve nothing more (S_PRIVATE)."""
        mem = machine.memory
        assert mem.hugetlb is not None
        h = hugetlb.hstate_sizelog(mem.hugetlb, (shmflg >> SHM_HUGE_SHIFT) & SHM_HUGE_MASK)
        if h is None:
            raise oserror(errno.EINVAL)
        hugesize = (size + h.size - 1) & ~(h.size - 1)
        f = hugetlb.hugetlb_file_setup(
            mem, f"/SYSV{key:08x}", hugesize, h, machine._next_ino(), shm=True
        )
        if not shmflg & SHM_NORESERVE and not hugetlb.hugetlb_reserve_file(
            mem, f.inode, hugesize >> h.shift
        ):
            hugetlb.release_file(mem, f.inode)
            raise oserror(errno.ENOMEM)
        return f.inode

    def rmid(self, machine: Machine, shmid: int) -> None:
        """shmctl(IPC_RMID) (do_shm_rmid()): destroyed now if nothing is attached (its file
        goes too), else marked SHM_DEST (its key becomes private) and destroyed at the last
        detach."""
        seg = self.segments.get(shmid) if shmid >= 0 else None
        if seg is None:
            raise oserror(errno.EINVAL)
        seg.removed = True
        machine._release_inode(seg.inode)  # shm_may_destroy(), then iput() of the file

    def stat(self, machine: Machine, shmid: int) -> ShmidDs:
        """shmctl(IPC_STAT) (shmctl_stat()): EINVAL for an id that does not exist (a
        destroyed one included); a segment marked SHM_DEST still answers."""
        seg = self.segments.get(shmid) if shmid >= 0 else None
        if seg is None:
            raise oserror(errno.EINVAL)
        return ShmidDs(
            key=IPC_PRIVATE if seg.removed else seg.key,
            mode=0o600 | (SHM_DEST if seg.removed else 0),
            segsz=seg.size,
            nattch=self.nattch(machine, seg),
        )

    @staticmethod
    def nattch(machine: Machine, seg: ShmSegment) -> int:
        """shm_nattch: the VMAs of every live address space that map the segment's file
        (each was counted by shm_open() and is uncounted by shm_close())."""
        inode = seg.inode
        return sum(
            1
            for mm in machine.memory.mms.values()
            for v in mm.tree
            if v.file is not None and v.file.inode is inode
        )

    def holds(self, machine: Machine, inode: Inode) -> bool:
        """Whether a live segment holds ``inode`` (its shm file): asked when a VMA of a
        deleted file has gone (shm_close()) and at IPC_RMID. A segment marked SHM_DEST with
        no VMA left is destroyed here (shm_may_destroy() -> shm_destroy(): its id goes;
        the caller then frees the file as for any deleted file nobody maps)."""
        seg = self.files.get(inode)
        if seg is None or self.segments.get(seg.shmid) is not seg:
            return False
        if seg.removed and not self.nattch(machine, seg):
            del self.segments[seg.shmid]
            return False
        return True

    def shmat(self, proc: Process, shmid: int, shmaddr: int, shmflg: int) -> int:
        """do_shmat(): checks in the kernel's order, then do_mmap() of the segment's file
        (MAP_SHARED, MAP_FIXED at a given address; SHM_RND rounds it down to SHMLBA)."""
        if shmid < 0:
            raise oserror(errno.EINVAL)
        addr = shmaddr & U64
        flags = MAP_SHARED
        if addr:
            if addr & (SHMLBA - 1):
                if not shmflg & SHM_RND:
                    raise oserror(errno.EINVAL)
                addr &= ~(SHMLBA - 1)
                if not addr and shmflg & SHM_REMAP:
                    raise oserror(errno.EINVAL)
            flags |= MAP_FIXED
        elif shmflg & SHM_REMAP:
            raise oserror(errno.EINVAL)
        prot = PROT_READ if shmflg & SHM_RDONLY else PROT_READ | PROT_WRITE
        if shmflg & SHM_EXEC:
            prot |= PROT_EXEC
        seg = self.segments.get(shmid)
        if seg is None:
            raise oserror(errno.EINVAL)  # shm_obtain_object_check(): no such id
        # do_shmat() maps i_size of the segment's file (a hugetlb one is rounded up)
        size = seg.inode.size if seg.inode.huge_shift else seg.size
        if (
            addr
            and not shmflg & SHM_REMAP
            and (addr + size > U64 or proc.mm.tree.find_intersection(addr, addr + size))
        ):
            raise oserror(errno.EINVAL)
        fd = proc.open_inode(seg.inode, writable=not shmflg & SHM_RDONLY)
        try:
            return proc.mmap(addr, size, prot, flags, fd, 0)
        finally:
            del proc.files[fd]  # the attach holds its own file; no fd stays open
            # a failed attach of a segment marked SHM_DEST with nothing else attached:
            # do_shmat()'s own count drops to 0 and shm_destroy() runs
            proc.machine._release_inode(seg.inode)

    def shmdt(self, proc: Process, shmaddr: int) -> None:
        """ksys_shmdt(): the first shm VMA at or after ``shmaddr`` whose offset matches its
        distance from it (pgoff 0: it starts there) is unmapped, with the later pieces of the
        same attach within the segment's size; EINVAL when there is none."""
        addr = shmaddr & U64
        if addr & (PAGE_SIZE - 1):
            raise oserror(errno.EINVAL)
        tree = proc.mm.tree
        shm_inodes = self.files
        found = None
        for vma in tree.range(addr, proc.mm.cfg.task_size):
            f = vma.file
            if (
                f is not None
                and f.inode in shm_inodes
                and (vma.start - addr) // PAGE_SIZE == vma.pgoff
            ):
                found = vma
                break
        if found is None or found.file is None:
            raise oserror(errno.EINVAL)
        seg = shm_inodes[found.file.inode]
        file = found.file
        size = seg.inode.size if seg.inode.huge_shift else seg.size
        end = addr + ((size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1))
        pieces = [
            v
            for v in tree.range(found.start, end)
            if v.file is file and v.end <= end and (v.start - addr) // PAGE_SIZE == v.pgoff
        ]
        for v in pieces:  # each shm_close(): the last one may destroy a removed segment
            proc.munmap(v.start, v.end - v.start)


_NAMESPACES: weakref.WeakKeyDictionary[Machine, ShmNamespace] = weakref.WeakKeyDictionary()


def shm_namespace(machine: Machine) -> ShmNamespace:
    """The machine's (one) IPC namespace."""
    ns = _NAMESPACES.get(machine)
    if ns is None:
        ns = _NAMESPACES[machine] = ShmNamespace()
    return ns
