"""What the VMA core needs from the rest of mm (Linux: mm/vma_internal.h).

``mm/vma.c`` reaches the rest of the kernel only through ``vma_internal.h``, so that
``tools/testing/vma`` can compile it in user space against stubs. ``vma_ops.py`` does the
same through ``VmaHooks``: the address space (``AddressSpace`` in ``core.py``) implements it,
and a unit test can pass a small recording stub instead of a whole ``Machine``.

Everything a hook does happens to pages, page tables or machine-wide accounting; the VMA
tree itself is changed only by ``vma_ops.py``.
"""

from __future__ import annotations

from typing import Protocol

from vmsim.mm.tree import VmaTree
from vmsim.mm.vma import Vma

__all__ = ["MapCountLimit", "VmaHooks"]


class MapCountLimit(Protocol):
    """The sysctl the VMA core checks (``sysctl_max_map_count``) and the record it keeps."""

    max_map_count: int  # vm.max_map_count
    # the smallest max_map_count every check so far passed at (a vmsim statistic)
    map_count_needed: int


class VmaHooks(Protocol):
    """The mm as seen by the VMA core: its tree, its limits and the side effects of unmapping.

    ``locked_vm`` is ``mm->locked_vm`` (pages), lowered by vms_complete_munmap_vmas().
    """

    locked_vm: int

    @property
    def tree(self) -> VmaTree: ...

    @property
    def cfg(self) -> MapCountLimit: ...

    def vm_unacct(self, pages: int) -> None:
        """vm_unacct_memory(): give back ``pages`` of the commit charge."""

    def unmap_vmas(self, vmas: list[Vma]) -> None:
        """vms_clear_ptes(): lru_add_drain(), then for each VMA (already out of the tree)
        clear its PTEs, free its page tables and drop its guard markers."""

    def remove_vma(self, vma: Vma) -> None:
        """remove_vma() of a file VMA: fput(), which frees a deleted file's page cache
        once nothing maps or opens it."""
