"""The VMA and the objects a VMA points at: open files and anon_vmas.

Mirrors ``struct vm_area_struct`` (include/linux/mm_types.h) with only the fields that decide
Linux's behaviour: the range, ``vm_flags``, ``vm_pgoff``, ``vm_file`` and the anon_vma state
that governs merging (``anon_vma`` and whether the ``anon_vma_chain`` is singular).

Value types only: this module imports nothing but constants and flags, so the VMA core
(``tree.py``, ``vma_ops.py``) can be built and tested without a machine.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vmsim.constants import PAGE_SHIFT
from vmsim.mm.flags import vmflags_text

if TYPE_CHECKING:  # an annotation only: the VMA core imports no page-level code
    from vmsim.mm.swapops import SwpEntry

_anon_ids = itertools.count(1)


class AnonVma:
    """Identity of an ``struct anon_vma``: created by the first write fault of a private VMA.
    A child's anon_vma made by fork has its parent's ``root`` (anon_vma_fork()): folios of
    the family can be found from any of them, which decides whether a swapped-in page may
    be mapped as it is or must be copied (ksm_might_need_to_copy())."""

    __slots__ = ("id", "root")

    def __init__(self, parent: AnonVma | None = None) -> None:
        self.id = next(_anon_ids)
        self.root: int = self.id if parent is None else parent.root

    def __repr__(self) -> str:
        return f"AnonVma#{self.id}"


@dataclass(slots=True)
class RaState:
    """struct file_ra_state: the current window [start, start + size), of which the last
    ``async_size`` pages are the trigger zone (its first page carries the mark).

    Defined here, beside ``OpenFile`` (``struct file``), as Linux keeps it in
    include/linux/fs.h beside ``struct file``: a plain value that the readahead code
    (``mm/readahead.py``) reads and updates, so the VMA types need not import that code."""

    start: int = 0  # first page of the current window
    size: int = 0  # pages in it
    async_size: int = 0  # pages of its tail that trigger the next window (the mark on the first)
    order: int = 0  # folio order of the window (the model reads 4 KiB folios)
    mmap_miss: int = 0  # page-cache misses minus hits of mmap faults (MMAP_LOTSAMISS)
    prev_pos: int = -1  # byte position of the last read (-1: none yet)


@dataclass(eq=False)
class Inode:
    """A file's contents and identity (``struct inode``): shared by every open of the file.

    ``pages`` is the page cache: page offset -> frame number (each holds a reference on
    its frame). ``backing`` is what a regular file holds on disk (page offset -> 4 KiB of
    data; absent pages are zeros), read into the page cache on a fault.
    """

    path: str  # the dentry's path as /proc/pid/maps prints it
    dev: tuple[int, int] = (0, 0)  # i_sb->s_dev (major, minor)
    ino: int = 0  # i_ino
    size: int = 0  # i_size: ftruncate and writes past the end change it
    pages: dict[int, int] = field(default_factory=dict)  # i_mapping; kept by filemap, truncate
    backing: dict[int, bytes] = field(default_factory=dict)  # the disk; writeback writes it
    swapped: dict[int, SwpEntry] = field(default_factory=dict)  # shmem: pgoff -> slot
    # workingset shadows of evicted pages: pgoff -> (nonresident_age, was in the workingset)
    shadows: dict[int, tuple[int, bool]] = field(default_factory=dict)
    shmem: bool = False  # tmpfs/memfd/shared-anon: own get_unmapped_area, no THP here
    deleted: bool = False  # name shown with " (deleted)"
    # hugetlbfs: huge_page_shift() of the file's hstate (21: 2 MiB, 30: 1 GiB), 0 for any
    # other file; its page cache and reservations are kept by vmsim.mm.hugetlb
    huge_shift: int = 0


@dataclass(eq=False)
class OpenFile:
    """An open file description (``struct file``): two open()s of one inode never merge.
    ``ra`` is its readahead state (file->f_ra)."""

    inode: Inode  # f_inode
    readable: bool = True  # FMODE_READ
    writable: bool = True  # FMODE_WRITE: MAP_SHARED with PROT_WRITE needs it (else EACCES)
    noexec: bool = False  # on a noexec mount: PROT_EXEC is refused (EPERM)
    ra: RaState = field(default_factory=RaState)  # f_ra; moved by vmsim.mm.readahead

    @property
    def name(self) -> str:
        return self.inode.path + (" (deleted)" if self.inode.deleted else "")


class Vma:
    """One virtual memory area ``[start, end)``.

    Invariants (checked by ``AddressSpace.check()`` in tests): page-aligned, ``start < end``,
    no overlap with any other VMA of its mm. ``anon_singular`` is False for a VMA whose
    anon_vma_chain has more than one entry (inherited through fork): such a VMA never merges
    with a neighbour that would have to adopt its anon_vma.
    """

    __slots__ = (
        "anon_singular",
        "anon_vma",
        "end",
        "file",
        "flags",
        "name",
        "pgoff",
        "start",
        "swap_ra",
    )

    def __init__(
        self,
        start: int,
        end: int,
        flags: int,
        pgoff: int,
        file: OpenFile | None = None,
        anon_vma: AnonVma | None = None,
        anon_singular: bool = True,
        name: str | None = None,
    ) -> None:
        self.start = start  # vm_start; kept by the VMA core (vma_ops: split, merge, expand)
        self.end = end  # vm_end (exclusive); kept by the VMA core
        self.flags = flags  # vm_flags (VM_* of vmsim.mm.flags); mprotect/mlock/madvise
        self.pgoff = pgoff  # vm_pgoff: file page of ``start``; split and mremap keep it in step
        self.file = file  # vm_file (None: anonymous); set at mmap, shared by split halves
        self.anon_vma = anon_vma  # set by the first write fault (anon_vma_prepare) or merges
        self.anon_singular = anon_singular  # anon_vma_chain has one entry (False after fork)
        # vm_ops->name() of a special mapping ([vdso], [vvar], ...): never merges (VM_SPECIAL)
        self.name = name
        # vma->swap_readahead_info: (last fault address, window, hits); None reads as
        # hits 4 (GET_SWAP_RA_VAL() of 0)
        self.swap_ra: tuple[int, int, int] | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> Vma:
        """copy.deepcopy(): the file and anon_vma through ``memo`` (shared by many VMAs, each
        copied once); the rest are values."""
        v = Vma(self.start, self.end, self.flags, self.pgoff, None, None, self.anon_singular)
        memo[id(self)] = v
        file = self.file
        if file is not None:
            dup = memo.get(id(file))
            v.file = dup if dup is not None else copy.deepcopy(file, memo)
        anon = self.anon_vma
        if anon is not None:
            dup = memo.get(id(anon))
            v.anon_vma = dup if dup is not None else copy.deepcopy(anon, memo)
        v.name = self.name
        v.swap_ra = self.swap_ra
        return v

    def copy(self) -> Vma:
        v = Vma(
            self.start,
            self.end,
            self.flags,
            self.pgoff,
            self.file,
            self.anon_vma,
            self.anon_singular,
            self.name,
        )
        v.swap_ra = self.swap_ra
        return v

    @property
    def pages(self) -> int:
        return (self.end - self.start) >> PAGE_SHIFT

    def pgoff_at(self, addr: int) -> int:
        """vma_pgoff_offset(): the file page offset that ``addr`` maps."""
        return self.pgoff + ((addr - self.start) >> PAGE_SHIFT)

    @property
    def is_anonymous(self) -> bool:
        """vma_is_anonymous(): no file and not a special mapping."""
        return self.file is None and self.name is None

    def __repr__(self) -> str:
        who = self.file.name if self.file else (self.name or "anon")
        return (
            f"Vma({self.start:#x}-{self.end:#x} {vmflags_text(self.flags).strip()} "
            f"pgoff={self.pgoff:#x} {who} {self.anon_vma})"
        )


__all__ = [
    "AnonVma",
    "Inode",
    "OpenFile",
    "RaState",
    "Vma",
]
