"""Helpers the mm modules share (mm/internal.h, include/linux/mm.h, asm/pgtable.h): the
folio flags of a new user page, a VMA's page protection, and reading a PTE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmsim.hw.pte import PAGE_PRESENT, PAGE_PROTNONE, PAGE_RW, pfn_of, vm_get_page_prot
from vmsim.mm.flags import VM_MAYWRITE, VM_SHARED, VM_WRITE
from vmsim.phys.frames import PageFlag

if TYPE_CHECKING:
    from vmsim.mm.vma import Vma

__all__ = [
    "ANON_FLAGS",
    "FILE_FLAGS",
    "SHMEM_FLAGS",
    "entry_pfn",
    "is_cow_mapping",
    "page_prot",
    "present",
    "wants_writenotify",
]

# The flags a new folio starts with (folio_add_new_anon_rmap(), filemap_add_folio(), shmem).
ANON_FLAGS = int(PageFlag.ANON | PageFlag.SWAPBACKED | PageFlag.UPTODATE | PageFlag.LRU)
SHMEM_FLAGS = int(PageFlag.FILE | PageFlag.SWAPBACKED | PageFlag.UPTODATE | PageFlag.LRU)
FILE_FLAGS = int(PageFlag.FILE | PageFlag.UPTODATE | PageFlag.LRU)
_PRESENT = PAGE_PRESENT | PAGE_PROTNONE


def is_cow_mapping(flags: int) -> bool:
    """is_cow_mapping(): private and possibly writable."""
    return (flags & (VM_SHARED | VM_MAYWRITE)) == VM_MAYWRITE


def wants_writenotify(vma: Vma) -> bool:
    """vma_wants_writenotify(): a shared writable mapping of a file that writes back (not
    tmpfs) maps its pages read-only so the first write is seen and the page dirtied."""
    f = vma.file
    return (
        f is not None
        and (vma.flags & (VM_SHARED | VM_WRITE)) == (VM_SHARED | VM_WRITE)
        and not f.inode.shmem
    )


def page_prot(vma: Vma) -> int:
    """vma->vm_page_prot."""
    prot = vm_get_page_prot(vma.flags)
    if wants_writenotify(vma):
        prot &= ~PAGE_RW
    return prot


def present(entry: int) -> bool:
    """pte_present(): the entry maps a frame (PROT_NONE entries too)."""
    return bool(entry & _PRESENT)


def entry_pfn(entry: int) -> int:
    """pte_pfn(): the frame a present 4 KiB entry maps."""
    return pfn_of(entry, 1)
