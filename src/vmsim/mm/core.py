"""The address space of one process (``struct mm_struct``).

Syscalls live in their own modules (mmap.py, mprotect.py, madvise.py, mremap.py) as functions
taking the ``AddressSpace``, the way the kernel's do_mmap()/do_mprotect_pkey() take the mm.
This module holds what they share: faults (which create the anon_vma that later decides
merges), accounting, and thin methods over the VMA core (``vma_ops.py``: split, the two merge
paths, unmapping), for which ``AddressSpace`` implements the ``VmaHooks`` of
``vma_internal.py``.

Invariants (checked by ``check()``): VMAs sorted, non-overlapping, page-aligned, non-empty,
``map_count == len(tree)``.
"""

from __future__ import annotations

import errno
import itertools
from dataclasses import dataclass, field
from typing import Any

from sortedcontainers import SortedDict

from vmsim.constants import (
    DEFAULT_MAX_MAP_COUNT,
    DEFAULT_MMAP_MIN_ADDR,
    LSM_MMAP_MIN_ADDR,
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SIZE,
    STACK_GUARD_GAP,
    TASK_SIZE_4LEVEL,
    TASK_SIZE_5LEVEL,
)
from vmsim.errors import (
    CAUSE_OVERCOMMIT,
    CAUSE_RLIMIT_AS,
    CAUSE_RLIMIT_DATA,
    BusError,
    Segfault,
    oserror,
)
from vmsim.hw.pagetable import PageTables
from vmsim.hw.pte import pfn_of
from vmsim.mm import huge_memory, hugetlb, memory, vma_ops
from vmsim.mm.flags import (
    VM_ACCESS_FLAGS,
    VM_ACCOUNT,
    VM_GROWSDOWN,
    VM_HUGETLB,
    VM_IGNORE_MERGE,
    VM_IO,
    VM_LOCKED,
    VM_LOCKONFAULT,
    VM_PFNMAP,
    VM_SHADOW_STACK,
    VM_SHARED,
    VM_WRITE,
)
from vmsim.mm.gup import gup_touch
from vmsim.mm.internal import entry_pfn, present
from vmsim.mm.kernel import Kernel
from vmsim.mm.lru import lru_add_drain
from vmsim.mm.tree import VmaTree
from vmsim.mm.vma import AnonVma, Vma
from vmsim.mm.vmstat import FaultStats
from vmsim.phys.frames import OutOfMemory, PageFlag

_PAGETABLE = int(PageFlag.PAGETABLE)
_ANON_FLAG = int(PageFlag.ANON)
PAGE_RW_BIT = 1 << 1

PAGE_MASK64 = (1 << 64) - PAGE_SIZE
U64 = (1 << 64) - 1


def page_align(n: int) -> int:
    """PAGE_ALIGN() on an unsigned long: wraps to 0 near 2**64, as in C."""
    return (n + PAGE_SIZE - 1) & PAGE_MASK64


@dataclass
class MmConfig:
    """System settings the mm code reads (sysctls, rlimits, capabilities)."""

    max_map_count: int = DEFAULT_MAX_MAP_COUNT
    mmap_min_addr: int = DEFAULT_MMAP_MIN_ADDR  # vm.mmap_min_addr (the DAC value)
    lsm_mmap_min_addr: int = LSM_MMAP_MIN_ADDR
    cap_sys_rawio: bool = True  # root: MAP_FIXED below mmap_min_addr is allowed
    five_level: bool = False
    overcommit_memory: int = 0
    overcommit_ratio: int = 50
    ram_pages: int = (16 << 30) >> PAGE_SHIFT
    swap_pages: int = 0
    thp: str = "madvise"  # /sys/kernel/mm/transparent_hugepage/enabled
    committed_pages: int = field(default=0)  # vm_committed_as, machine-wide
    rlimit_as: int | None = None  # RLIMIT_AS in bytes (None: unlimited)
    rlimit_data: int | None = None  # RLIMIT_DATA in bytes (None: unlimited)
    map_count_needed: int = 0  # the smallest max_map_count every check so far passed at
    memory: Kernel | None = None  # RAM, TLBs, swap... (made from ram_pages when not given)

    def __post_init__(self) -> None:
        if self.memory is None:
            self.memory = Kernel(max(self.ram_pages, 2) << PAGE_SHIFT)

    @property
    def task_size(self) -> int:
        return TASK_SIZE_5LEVEL if self.five_level else TASK_SIZE_4LEVEL

    @property
    def effective_mmap_min_addr(self) -> int:
        """security/min_addr.c: max(dac_mmap_min_addr, CONFIG_LSM_MMAP_MIN_ADDR)."""
        return max(self.mmap_min_addr, self.lsm_mmap_min_addr)


def vm_start_gap(vma: Vma) -> int:
    """vm_start_gap(): a stack's start minus the guard gap that no mapping may enter."""
    start = vma.start
    if vma.flags & VM_GROWSDOWN:
        gap = start - STACK_GUARD_GAP
        return gap if gap <= start and gap > 0 else 0
    if vma.flags & VM_SHADOW_STACK:
        return max(start - PAGE_SIZE, 0)
    return start


_mm_serials = itertools.count(1)


class AddressSpace:
    """``struct mm_struct``: the VMA tree plus the fields that syscalls consult.

    ``pt`` holds the page tables (their pages are frames of the machine's RAM, counted as
    PageTables); ``guards`` the virtual page numbers carrying a MADV_GUARD_INSTALL marker;
    ``stats`` the fault and translation counters; ``pcid`` the PCID it last ran with (-1:
    none, its TLB entries are gone).
    """

    def __init__(self, cfg: MmConfig, mmap_base: int, mmap_legacy_base: int | None = None) -> None:
        self.serial = next(_mm_serials)  # a stable name (id() may be reused once freed)
        self.cfg = cfg  # sysctls and rlimits (the kernel's globals and task rlimits)
        self.tree = VmaTree()  # mm->mm_mt: the VMAs; kept by the VMA operations below
        self.mmap_base = mmap_base  # mm->mmap_base (top-down placement); set by exec
        self.mmap_legacy_base = (
            mmap_legacy_base
            if mmap_legacy_base is not None
            else page_align(cfg.task_size // 3)  # TASK_UNMAPPED_BASE, no randomisation
        )
        self.start_brk = 0  # mm->start_brk / brk: the heap; kept by brk()
        self.brk = 0
        self.start_stack = 0  # mm->start_stack; set by exec
        self.locked_vm = 0  # mm->locked_vm: pages of VM_LOCKED VMAs; kept by mlock, munmap
        self.def_flags = 0  # mm->def_flags: VM_LOCKED[ONFAULT] after mlockall(MCL_FUTURE)
        mem = cfg.memory
        assert mem is not None
        self.mem: Kernel = mem  # the machine's memory-management globals (vmsim.mm.kernel)
        frames = mem.frames
        self.pt = PageTables(
            5 if cfg.five_level else 4,
            self._alloc_table,  # watermarks, reclaim, OOM like any page
            frames.put,  # type: ignore[arg-type]
        )
        self.pcid = -1  # mm->context: its PCID (-1: none); kept by vmsim.hw.cpu.Cpu
        # (L1 dTLB 4 KiB sets, set mask, PCID) while this is the CPU's current address space:
        # the inline TLB probe of access.user_access; kept by vmsim.hw.cpu.Cpu
        self.fast: tuple[list[dict[int, Any]], int, int] | None = None
        self.stats = FaultStats()  # task min_flt/maj_flt and more; kept by account_fault()
        self.alive = True  # mm_users > 0; cleared by destroy() (exit_mmap())
        mem.mms[self.serial] = self
        # Replay of a recorded trace: where the kernel actually placed the next mapping
        # (it depends on ASLR); get_unmapped_area() takes it when that range is free.
        self.placement_hint: int | None = None
        # MADV_GUARD_INSTALL markers (PTE markers in Linux), by virtual page number
        self.guards: SortedDict = SortedDict()

    def _alloc_table(self) -> int:
        """pte_alloc_one() and the like: a page-table page is a folio like any other (a
        bound method, not a closure, so that copy.deepcopy() of the mm allocates from the
        copy's memory: a replay's snapshot, vmsim.trace.replay)."""
        return self.mem.alloc_folio(_PAGETABLE)

    # ----------------------------------------------------------------- basics
    @property
    def map_count(self) -> int:
        return len(self.tree)

    def check(self) -> None:
        """Assert the invariants in the class docstring (a debugging aid for tests)."""
        last_end = -1
        for vma in self.tree:
            assert vma.start < vma.end, vma
            assert vma.start % PAGE_SIZE == 0 and vma.end % PAGE_SIZE == 0, vma
            assert vma.start >= last_end, vma
            last_end = vma.end
        # the free-space index is exactly the complement of the VMAs
        expect = []
        cursor = 0
        for vma in self.tree:
            if vma.start > cursor:
                expect.append((cursor, vma.start))
            cursor = vma.end
        expect.append((cursor, 1 << 64))
        assert self.tree.free.ranges() == expect, "free-space index out of step"

    # ----------------------------------------------------------- accounting
    def vm_enough_memory(self, pages: int) -> bool:
        """__vm_enough_memory(): charge ``pages`` to vm_committed_as, or refuse (ENOMEM)."""
        cfg = self.cfg
        if cfg.overcommit_memory == 1:
            cfg.committed_pages += pages
            return True
        if cfg.overcommit_memory == 0:
            if pages > cfg.ram_pages + cfg.swap_pages:
                return False
            cfg.committed_pages += pages
            return True
        allowed = cfg.ram_pages * cfg.overcommit_ratio // 100 + cfg.swap_pages
        if cfg.committed_pages + pages > allowed:
            return False
        cfg.committed_pages += pages
        return True

    def commit_error(self, pages: int) -> OSError:
        cfg = self.cfg
        mode = cfg.overcommit_memory
        if mode == 0:
            why = (
                f"overcommit_memory=0: {pages} pages > RAM + swap "
                f"({cfg.ram_pages + cfg.swap_pages} pages)"
            )
        else:
            limit = cfg.ram_pages * cfg.overcommit_ratio // 100 + cfg.swap_pages
            why = (
                f"overcommit_memory=2: Committed_AS {cfg.committed_pages} + {pages} pages "
                f"> CommitLimit {limit} pages"
            )
        return oserror(errno.ENOMEM, CAUSE_OVERCOMMIT, why)

    @property
    def total_vm(self) -> int:
        """Pages mapped (mm->total_vm)."""
        return self.tree.free.used >> PAGE_SHIFT

    def data_vm(self) -> int:
        """Pages of private writable non-stack mappings (mm->data_vm)."""
        return sum(
            v.pages
            for v in self.tree
            if (v.flags & (VM_WRITE | VM_SHARED | VM_GROWSDOWN)) == VM_WRITE
        )

    def may_expand_vm(self, flags: int, npages: int) -> None:
        """may_expand_vm(): RLIMIT_AS on every mapping, RLIMIT_DATA on data mappings."""
        cfg = self.cfg
        if cfg.rlimit_as is not None and self.total_vm + npages > cfg.rlimit_as >> PAGE_SHIFT:
            raise oserror(
                errno.ENOMEM,
                CAUSE_RLIMIT_AS,
                f"RLIMIT_AS {cfg.rlimit_as:#x}: {self.total_vm} + {npages} pages mapped",
            )
        if (
            cfg.rlimit_data is not None
            and (flags & (VM_WRITE | VM_SHARED | VM_GROWSDOWN)) == VM_WRITE
            and self.data_vm() + npages > cfg.rlimit_data >> PAGE_SHIFT
        ):
            raise oserror(
                errno.ENOMEM,
                CAUSE_RLIMIT_DATA,
                f"RLIMIT_DATA {cfg.rlimit_data:#x}: {self.data_vm()} + {npages} data pages",
            )

    def vm_unacct(self, pages: int) -> None:
        self.cfg.committed_pages = max(0, self.cfg.committed_pages - pages)

    # ------------------------------------------- the VMA core (vma_ops.py)
    # Thin delegations: the syscall modules call these; the logic lives in vma_ops.py,
    # which reaches back only through the VmaHooks methods below.
    def check_map_count(self, need: int, site: str) -> None:
        vma_ops.check_map_count(self, need, site)

    def merge_new_range(
        self,
        start: int,
        end: int,
        flags: int,
        file: object,
        pgoff: int,
        prev: Vma | None,
        nxt: Vma | None,
        src_anon: AnonVma | None = None,
        src_singular: bool = True,
        just_expand: bool = False,
    ) -> Vma | None:
        """vma_merge_new_range() of ``[start, end)`` (see vma_ops): ``src_anon`` is the
        anon_vma the range brings (copy_vma() of an mremap move), ``src_singular`` whether
        its source's anon_vma_chain is singular."""
        vmg = vma_ops.VmaMergeStruct(
            start, end, flags, file, pgoff, prev, nxt, src_anon, src_singular,
            just_expand=just_expand,
        )  # fmt: skip
        return vma_ops.vma_merge_new_range(self.tree, vmg)

    def vma_modify(self, vma: Vma, start: int, end: int, newflags: int) -> Vma:
        # __split_vma() / vma_merge_existing_range() -> vma_adjust_trans_huge(): a PMD leaf
        # across a new VMA boundary is split first
        if newflags != vma.flags and (start > vma.start or end < vma.end):
            huge_memory.vma_adjust_trans_huge(self, start, end)
        return vma_ops.vma_modify(self, vma, start, end, newflags)

    def gather_munmap(self, start: int, end: int, first: Vma) -> list[Vma]:
        huge_memory.vma_adjust_trans_huge(self, start, end)
        return vma_ops.vms_gather_munmap_vmas(self, start, end, first)

    def remove_vmas(self, vmas: list[Vma]) -> None:
        vma_ops.vms_complete_munmap_vmas(self, vmas)

    def do_munmap(self, start: int, end: int) -> None:
        huge_memory.vma_adjust_trans_huge(self, start, end)  # __split_vma() of the edges
        vma_ops.do_vmi_munmap(self, start, end)

    # VmaHooks: what unmapping does to pages (vm_unacct() is above)
    def unmap_vmas(self, vmas: list[Vma]) -> None:
        """vms_clear_ptes(): drain the mlock batch, then clear the PTEs of each VMA (freeing
        its page tables) and drop its guard markers."""
        lru_add_drain(self.mem)
        if not self.pt_used and not self.guards:
            return
        for v in vmas:
            if v.flags & VM_HUGETLB:  # unmap_single_vma() -> __unmap_hugepage_range()
                hugetlb.unmap_hugepage_range(self, v, v.start, v.end, close=True)
                memory.zap_range(self, v.start, v.end, free_tables=True)  # the empty tables
                continue
            memory.zap_range(
                self, v.start, v.end, free_tables=False, locked=bool(v.flags & VM_LOCKED)
            )
            self.drop_guards(v.start, v.end)
        # free_pgtables(): only tables no remaining VMA's range shares go (floor: the end of
        # the VMA before, ceiling: the start of the one after), empty or not in the kernel;
        # a table shared with a neighbour stays even when empty (a later fault there finds
        # it: no THP)
        if self.pt_used and vmas:
            start, end = vmas[0].start, vmas[-1].end
            prev = self.tree.prev_of(start)
            nxt = self.tree.find(end)
            floor = prev.end if prev is not None else 0
            ceiling = nxt.start if nxt is not None else 0
            if self.pt.free_pgd_range(start, end, floor, ceiling):
                self.mem.cpu.pwc.flush()

    def remove_vma(self, vma: Vma) -> None:
        """remove_vma() -> fput(): a deleted file's page cache may now be freed."""
        f = vma.file
        if f is not None and f.inode.deleted and self.mem.on_file_unmapped is not None:
            self.mem.on_file_unmapped(f.inode)

    # ------------------------------------------------------------ contents
    @property
    def pt_used(self) -> bool:
        """Whether any page table below the top one exists (any entry at all)."""
        return self.pt.table_pages > 1

    def zap(self, start: int, end: int, free_tables: bool = False) -> None:
        """Clear the PTEs of ``[start, end)`` (zap_page_range_single()); guard markers stay."""
        memory.zap_range(self, start, end, free_tables=free_tables)

    def drop_guards(self, start: int, end: int) -> None:
        guards = self.guards
        if not guards:
            return
        for k in list(guards.irange(start >> PAGE_SHIFT, (end >> PAGE_SHIFT) - 1)):
            del guards[k]

    def move_guards(self, old: int, new: int, length: int) -> None:
        """Guard markers follow an mremap move (move_page_tables() moves them with the PTEs:
        ``vmsim.mm.mremap.move_page_tables``)."""
        if not self.guards:
            return
        delta = (new - old) >> PAGE_SHIFT
        lo = old >> PAGE_SHIFT
        hi = lo + (length >> PAGE_SHIFT) - 1
        moved = list(self.guards.irange(lo, hi))
        for k in moved:
            del self.guards[k]
        for k in moved:
            self.guards[k + delta] = True

    def account_fault(self, what: memory.FaultResult, remote: bool) -> None:
        """mm_account_fault(): vmstat pgfault/pgmajfault and the task's min_flt/maj_flt, and
        the model's count by kind (``memory.FAULT_KINDS``)."""
        major, kind = memory.FAULT_KINDS[what]
        for st in (self.mem.stats,) if remote else (self.mem.stats, self.stats):
            st.pgfault += 1
            if major:
                st.pgmajfault += 1
            if kind is not None:
                setattr(st, kind, getattr(st, kind) + 1)

    def destroy(self) -> None:
        """exit_mmap(): unmap everything, free the page tables, give up the PCID."""
        if not self.alive:
            return
        for v in self.tree:
            if v.flags & VM_ACCOUNT:
                self.vm_unacct(v.pages)
        lru_add_drain(self.mem)
        for v in self.tree:
            if v.flags & VM_HUGETLB:
                hugetlb.unmap_hugepage_range(self, v, v.start, v.end, close=True)
                continue
            if self.pt_used:
                memory.zap_range(
                    self, v.start, v.end, free_tables=True, locked=bool(v.flags & VM_LOCKED)
                )
        self.pt.destroy()
        self.mem.cpu.release(self)
        self.mem.mms.pop(self.serial, None)
        self.alive = False

    # ------------------------------------------------------------- faults
    def anon_vma_prepare(self, vma: Vma) -> None:
        """__anon_vma_prepare(): reuse a compatible neighbour's anon_vma (next first, then
        prev, only if that neighbour's chain is singular) or allocate a new one."""
        if vma.anon_vma is not None:
            return
        # find_mergeable_anon_vma()
        nxt = self.tree.next(vma)
        anon_vma = _reusable_anon_vma(nxt, vma, nxt) if nxt is not None else None
        if anon_vma is None:
            prev = self.tree.prev(vma)
            anon_vma = _reusable_anon_vma(prev, prev, vma) if prev is not None else None
        vma.anon_vma = anon_vma if anon_vma is not None else AnonVma()
        vma.anon_singular = True

    def populate(self, start: int, end: int, ignore_errors: bool) -> bool:
        """__mm_populate(): fault in ``[start, end)`` like mlock/MAP_POPULATE.

        Writable private VMAs take write faults (creating their anon_vma), others read
        faults; PROT_NONE VMAs fail (-EFAULT). Returns False on an error not ignored.
        """
        addr = start
        while addr < end:
            vma = self.tree.find_intersection(addr, end)
            if vma is None:
                break
            nend = min(end, vma.end)
            addr = max(addr, vma.start)
            if vma.flags & (VM_IO | VM_PFNMAP):
                addr = nend
                continue
            if vma.flags & VM_LOCKONFAULT:
                addr = nend
                continue
            ok = self._populate_vma(vma, addr, nend)
            if not ok and not ignore_errors:
                return False
            addr = nend
        return True

    def _populate_vma(self, vma: Vma, start: int, end: int) -> bool:
        """populate_vma_page_range(): get_user_pages() over ``[start, end)`` with FOLL_FORCE:
        a writable private VMA takes write faults (its anon_vma, private copies of file
        pages), others read faults. A guard marker or a file page past EOF stops the walk
        with -EFAULT (returns False); so does running out of RAM (-ENOMEM)."""
        if not (vma.flags & VM_ACCESS_FLAGS):
            return False
        write = (vma.flags & (VM_WRITE | VM_SHARED)) == VM_WRITE
        ok = True
        a = start
        while a < end:
            pfn = self.follow_page(a, write)
            if pfn is None:
                try:
                    memory.handle_mm_fault(self, vma, a, write)
                except (Segfault, BusError):
                    ok = False
                    break
                except OutOfMemory:
                    ok = False
                    break
                pfn = self.follow_page(a, write)
            if pfn is not None:
                gup_touch(self, a, pfn, write)
            a += PAGE_SIZE
        return ok

    def follow_page(self, addr: int, write: bool, force: bool = True) -> int | None:
        """follow_page_pte(): the frame at ``addr`` if the PTE allows the access already
        (for a forced write into a read-only private VMA: an anonymous page nobody else
        holds, as can_follow_write_pte() demands), else None (a fault is needed)."""
        if not self.pt_used:
            return None
        leaf = self.pt.get(addr)
        if leaf is None or not present(leaf.entry):
            return None
        e = leaf.entry
        pfn = entry_pfn(e)
        if leaf.level > 1:  # follow_huge_pmd(): the page inside the THP
            pfn = pfn_of(e, leaf.level) + ((addr & (PMD_SIZE - 1)) >> PAGE_SHIFT)
            if write and not e & PAGE_RW_BIT:
                return None
            return pfn
        if write and not e & PAGE_RW_BIT:
            frames = self.mem.frames
            if not (
                force
                and pfn != frames.zero_pfn
                and frames.flags(pfn) & _ANON_FLAG
                and frames.refcount(pfn) == 1
                and not self._vma_writable(addr)
            ):
                return None
        return pfn

    def _vma_writable(self, addr: int) -> bool:
        vma = self.tree.lookup(addr)
        return vma is not None and bool(vma.flags & VM_WRITE)


def _reusable_anon_vma(old: Vma, a: Vma, b: Vma) -> AnonVma | None:
    """reusable_anon_vma(): the anon_vma of ``old`` (the neighbour ``a`` or ``b``) if ``a``
    and ``b`` are compatible and ``old``'s anon_vma chain is singular, else None."""
    if _anon_vma_compatible(a, b) and old.anon_vma is not None and old.anon_singular:
        return old.anon_vma
    return None


def _anon_vma_compatible(a: Vma, b: Vma) -> bool:
    """anon_vma_compatible(): adjacent, same file, flags equal but for access bits,
    contiguous page offsets."""
    return (
        a.end == b.start
        and a.file is b.file
        and a.name is None
        and b.name is None
        and not ((a.flags ^ b.flags) & ~(VM_ACCESS_FLAGS | VM_IGNORE_MERGE))
        and b.pgoff == a.pgoff + ((b.start - a.start) >> PAGE_SHIFT)
    )


__all__ = [
    "PAGE_MASK64",
    "PAGE_RW_BIT",
    "U64",
    "AddressSpace",
    "MmConfig",
    "page_align",
    "vm_start_gap",
]
