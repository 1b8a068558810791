"""mmap(2), munmap(2), brk(2) and address selection: mm/mmap.c, mm/vma.c and
arch/x86/kernel/sys_x86_64.c of Linux 6.18."""

from __future__ import annotations

import errno

from vmsim.constants import (
    MAP_32BIT,
    MAP_ANONYMOUS,
    MAP_DENYWRITE,
    MAP_DROPPABLE,
    MAP_EXECUTABLE,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_GROWSDOWN,
    MAP_HUGETLB,
    MAP_LOCKED,
    MAP_NONBLOCK,
    MAP_NORESERVE,
    MAP_POPULATE,
    MAP_PRIVATE,
    MAP_SHARED,
    MAP_SHARED_VALIDATE,
    MAP_STACK,
    MAP_SYNC,
    MAP_TYPE,
    MAP_UNINITIALIZED,
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SIZE,
    PROT_EXEC,
    PROT_WRITE,
)
from vmsim.errors import CAUSE_ADDRESS_SPACE, oserror
from vmsim.mm import huge_memory, hugetlb, vma_ops
from vmsim.mm.core import U64, AddressSpace, page_align, vm_start_gap
from vmsim.mm.flags import (
    VM_ACCOUNT,
    VM_DATA_DEFAULT_FLAGS,
    VM_DONTDUMP,
    VM_DROPPABLE,
    VM_EXEC,
    VM_GROWSDOWN,
    VM_LOCKED,
    VM_LOCKED_MASK,
    VM_MAYEXEC,
    VM_MAYREAD,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_NOHUGEPAGE,
    VM_NORESERVE,
    VM_SHADOW_STACK,
    VM_SHARED,
    VM_SPECIAL,
    VM_STARTGAP_FLAGS,
    VM_SYNC,
    VM_WIPEONFORK,
    VM_WRITE,
    calc_vm_prot_bits,
)
from vmsim.mm.vma import Inode, OpenFile, Vma

LEGACY_MAP_MASK = (
    MAP_SHARED
    | MAP_PRIVATE
    | MAP_FIXED
    | MAP_ANONYMOUS
    | MAP_DENYWRITE
    | MAP_EXECUTABLE
    | MAP_UNINITIALIZED
    | MAP_GROWSDOWN
    | MAP_LOCKED
    | MAP_NORESERVE
    | MAP_POPULATE
    | MAP_NONBLOCK
    | MAP_STACK
    | MAP_HUGETLB
)
MAX_LFS_FILESIZE = (1 << 63) - 1


# ------------------------------------------------------------------ placement
def _highest_gap(mm: AddressSpace, length: int, low: int, high: int) -> tuple[int, int] | None:
    """mas_empty_area_rev(): the highest free ``[gs, ge)`` inside ``[low, high)`` with
    ``ge - gs >= length``; walks the free ranges (not the VMAs) down from ``high``."""
    if high <= low or high - low < length:
        return None
    for fs, fe in mm.tree.free.descending(high):
        if fe <= low:
            return None
        ge = min(fe, high)
        gs = max(fs, low)
        if ge - gs >= length:
            return gs, ge
    return None


def _lowest_gap(mm: AddressSpace, length: int, low: int, high: int) -> tuple[int, int] | None:
    """mas_empty_area(): the lowest free ``[gs, ge)`` inside ``[low, high)`` of ``length``."""
    if high <= low or high - low < length:
        return None
    for fs, fe in mm.tree.free.ascending(low):
        gs = max(fs, low)
        if gs >= high:
            return None
        ge = min(fe, high)
        if ge - gs >= length:
            return gs, ge
    return None


def unmapped_area_topdown(
    mm: AddressSpace, length: int, low: int, high: int, start_gap: int = 0
) -> int:
    """unmapped_area_topdown(): highest fit below ``high``; -ENOMEM as a negative errno."""
    need = length + start_gap
    low = max(low, mm.cfg.effective_mmap_min_addr)
    while True:
        found = _highest_gap(mm, need, low, high)
        if found is None:
            return -errno.ENOMEM
        _, gap_end = found
        gap = gap_end - length
        nxt = mm.tree.find(gap_end)
        if nxt is not None and nxt.flags & VM_STARTGAP_FLAGS and vm_start_gap(nxt) < gap_end:
            high = vm_start_gap(nxt)
            continue
        return gap


def unmapped_area(mm: AddressSpace, length: int, low: int, high: int, start_gap: int = 0) -> int:
    """unmapped_area(): lowest fit at or above ``low``."""
    need = length + start_gap
    low = max(low, mm.cfg.effective_mmap_min_addr)
    while True:
        found = _lowest_gap(mm, need, low, high)
        if found is None:
            return -errno.ENOMEM
        gs, _ = found
        gap = gs + start_gap
        nxt = mm.tree.find(gap)
        if nxt is not None and nxt.flags & VM_STARTGAP_FLAGS and vm_start_gap(nxt) < gap + need - 1:
            low = nxt.end
            continue
        return gap


def _hint_fits(mm: AddressSpace, addr: int, length: int) -> bool:
    vma = mm.tree.find(addr)
    return vma is None or addr + length <= vm_start_gap(vma)


def arch_get_unmapped_area(
    mm: AddressSpace, addr: int, length: int, flags: int, vm_flags: int
) -> int:
    """arch_get_unmapped_area() (bottom-up from mmap_legacy_base, or MAP_32BIT)."""
    task_size = mm.cfg.task_size
    if length > task_size:
        return -errno.ENOMEM
    if flags & MAP_FIXED:
        return addr
    if flags & MAP_32BIT:
        begin, end = 0x40000000, 0x80000000
    else:
        begin, end = mm.mmap_legacy_base, (1 << 47) - PAGE_SIZE
    if length > end:
        return -errno.ENOMEM
    if addr:
        addr = page_align(addr)
        if end - length >= addr and _hint_fits(mm, addr, length):
            return addr
    start_gap = PAGE_SIZE if vm_flags & VM_SHADOW_STACK else 0
    return unmapped_area(mm, length, begin, end, start_gap)


def arch_get_unmapped_area_topdown(
    mm: AddressSpace, addr0: int, length: int, flags: int, vm_flags: int
) -> int:
    """arch_get_unmapped_area_topdown(): MAP_FIXED as given, a free hint, else the highest
    gap below mmap_base; falls back to bottom-up."""
    task_size = mm.cfg.task_size
    default_window = (1 << 47) - PAGE_SIZE
    addr = addr0
    if length > task_size:
        return -errno.ENOMEM
    if flags & MAP_FIXED:
        return addr
    if flags & MAP_32BIT:
        return arch_get_unmapped_area(mm, addr0, length, flags, vm_flags)
    if addr:
        addr &= ~(PAGE_SIZE - 1)
        # mmap_address_hint_valid()
        valid = task_size - length >= addr and (addr > default_window) == (
            addr + length > default_window
        )
        if valid and _hint_fits(mm, addr, length):
            return addr
    high = mm.mmap_base
    if addr > default_window:
        high += task_size - default_window
    start_gap = PAGE_SIZE if vm_flags & VM_SHADOW_STACK else 0
    found = unmapped_area_topdown(mm, length, PAGE_SIZE, high, start_gap)
    if found >= 0:
        return found
    return arch_get_unmapped_area(mm, addr0, length, flags, vm_flags)


def get_unmapped_area(
    mm: AddressSpace,
    file: OpenFile | None,
    addr: int,
    length: int,
    pgoff: int,
    flags: int,
    vm_flags: int,
) -> int:
    """__get_unmapped_area(): the address to map at, or a negative errno.

    Private anonymous mappings whose length is a multiple of 2 MiB, without a hint, are
    placed THP-aligned (__thp_get_unmapped_area: search for len + 2 MiB, round down).
    shmem (memfd, MAP_SHARED|MAP_ANONYMOUS) uses its own hook, which with
    shmem_enabled=never places like an ordinary mapping. Regular files (ext4 and most disk
    file systems) use thp_get_unmapped_area(): 2 MiB alignment of the file offset when the
    mapping spans a whole aligned 2 MiB of the file.
    """
    task_size = mm.cfg.task_size
    if length > task_size:
        return -errno.ENOMEM
    forced = mm.placement_hint
    if forced is not None and not (flags & MAP_FIXED):
        mm.placement_hint = None
        if (
            not forced & (PAGE_SIZE - 1)
            and forced <= task_size - length
            and mm.tree.find_intersection(forced, forced + length) is None
        ):
            return forced
    if (
        mm.cfg.thp != "never"
        and file is None
        and not (flags & MAP_SHARED)
        and not addr
        and length % PMD_SIZE == 0
    ):
        ret = _thp_get_unmapped_area(mm, 0, length, 0, flags, vm_flags)
        if not ret:
            ret = arch_get_unmapped_area_topdown(mm, addr, length, flags, vm_flags)
        addr = ret
    elif file is not None and file.inode.huge_shift:
        addr = _hugetlb_get_unmapped_area(mm, addr, length, flags, vm_flags, file.inode.huge_shift)
    elif file is not None and not file.inode.shmem:
        # f_op->get_unmapped_area of ext4/xfs/btrfs is thp_get_unmapped_area()
        ret = _thp_get_unmapped_area(mm, addr, length, pgoff << PAGE_SHIFT, flags, vm_flags)
        if not ret:
            ret = arch_get_unmapped_area_topdown(mm, addr, length, flags, vm_flags)
        addr = ret
    else:
        addr = arch_get_unmapped_area_topdown(mm, addr, length, flags, vm_flags)
    if addr < 0:
        return addr
    if addr > task_size - length:
        return -errno.ENOMEM
    if addr & (PAGE_SIZE - 1):
        return -errno.EINVAL
    # security_mmap_addr() -> cap_mmap_addr()
    if addr < mm.cfg.mmap_min_addr and not mm.cfg.cap_sys_rawio:
        return -errno.EPERM
    return addr


def _hugetlb_get_unmapped_area(
    mm: AddressSpace, addr: int, length: int, flags: int, vm_flags: int, shift: int
) -> int:
    """hugetlb_get_unmapped_area() (fs/hugetlbfs/inode.c): the length must be a multiple
    of the huge page size and a MAP_FIXED address aligned to it (else EINVAL); a hint is
    rounded up to it; the search (arch_get_unmapped_area_topdown(), then bottom-up) asks
    vm_unmapped_area() for huge page alignment (align_mask = huge size - PAGE_SIZE)."""
    size = 1 << shift
    if length & (size - 1):
        return -errno.EINVAL
    if flags & MAP_FIXED:
        return -errno.EINVAL if addr & (size - 1) else addr
    task_size = mm.cfg.task_size
    if addr:
        addr = (addr + size - 1) & ~(size - 1) & U64
        default_window = (1 << 47) - PAGE_SIZE
        valid = task_size - length >= addr and (addr > default_window) == (
            addr + length > default_window
        )
        if addr and valid and _hint_fits(mm, addr, length):
            return addr
    mask = size - PAGE_SIZE
    if length + mask > task_size:
        return -errno.ENOMEM
    found = unmapped_area_topdown(mm, length + mask, PAGE_SIZE, mm.mmap_base)
    if found >= 0:
        return (found + mask) & ~(size - 1)  # the highest aligned start in the gap
    found = unmapped_area(mm, length + mask, mm.mmap_legacy_base, (1 << 47) - PAGE_SIZE)
    if found >= 0:
        return (found + mask) & ~(size - 1)  # the lowest aligned start in the gap
    return found


def _thp_get_unmapped_area(
    mm: AddressSpace, addr: int, length: int, off: int, flags: int, vm_flags: int
) -> int:
    """__thp_get_unmapped_area() with size = PMD_SIZE: place so that file offset ``off``
    falls on a 2 MiB boundary (searching for len + 2 MiB); 0 means 'not done'."""
    off_end = off + length
    off_align = (off + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    if off_end <= off_align or off_end - off_align < PMD_SIZE:
        return 0
    len_pad = length + PMD_SIZE
    if len_pad > U64:
        return 0
    ret = arch_get_unmapped_area_topdown(mm, addr, len_pad, flags, vm_flags)
    if ret < 0:
        return 0
    if ret == addr:  # the hint was free
        return addr
    off_sub = (off - ret) & (PMD_SIZE - 1)
    if not off_sub:  # MMF_TOPDOWN
        return ret + PMD_SIZE
    return ret + off_sub


def placement_error(code: int, length: int) -> OSError:
    """The error of a failed get_unmapped_area(): ENOMEM there means no room."""
    if code == errno.ENOMEM:
        return oserror(
            code, CAUSE_ADDRESS_SPACE, f"no free range of {length:#x} bytes in the address space"
        )
    return oserror(code)


# ------------------------------------------------------------------------ mmap
def do_mmap(
    mm: AddressSpace,
    addr: int,
    length: int,
    prot: int,
    flags: int,
    file: OpenFile | None,
    pgoff: int,
    new_shmem: object,
) -> tuple[int, int]:
    """do_mmap(): returns (address, bytes to populate). ``new_shmem`` makes the shmem file
    of a MAP_SHARED|MAP_ANONYMOUS mapping (shmem_zero_setup())."""
    cfg = mm.cfg
    if not length:
        raise oserror(errno.EINVAL)
    if flags & MAP_FIXED_NOREPLACE:
        flags |= MAP_FIXED
    if not (flags & MAP_FIXED):
        # round_hint_to_min()
        addr &= ~(PAGE_SIZE - 1) & U64
        if addr and addr < cfg.effective_mmap_min_addr:
            addr = page_align(cfg.effective_mmap_min_addr)
    length = page_align(length)
    if not length:
        raise oserror(errno.ENOMEM)
    if pgoff + (length >> PAGE_SHIFT) > U64:
        raise oserror(errno.EOVERFLOW)
    mm.check_map_count(len(mm.tree), "do_mmap()")

    vm_flags = calc_vm_prot_bits(prot) | mm.def_flags | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
    if flags & MAP_GROWSDOWN:
        vm_flags |= VM_GROWSDOWN
    if flags & MAP_LOCKED:
        vm_flags |= VM_LOCKED
    if flags & MAP_SYNC:
        vm_flags |= VM_SYNC
    if flags & MAP_STACK:
        vm_flags |= VM_NOHUGEPAGE

    addr = get_unmapped_area(mm, file, addr, length, pgoff, flags, vm_flags)
    if addr < 0:
        raise placement_error(-addr, length)
    if flags & MAP_FIXED_NOREPLACE and mm.tree.find_intersection(addr, addr + length):
        raise oserror(errno.EEXIST)

    if file is not None:
        if length > MAX_LFS_FILESIZE or pgoff > (MAX_LFS_FILESIZE - length) >> PAGE_SHIFT:
            raise oserror(errno.EOVERFLOW)
        maptype = flags & MAP_TYPE
        if maptype in (MAP_SHARED, MAP_SHARED_VALIDATE):
            if maptype == MAP_SHARED:
                flags &= LEGACY_MAP_MASK
            if flags & ~LEGACY_MAP_MASK:
                raise oserror(errno.EOPNOTSUPP)
            if prot & PROT_WRITE and not file.writable:
                raise oserror(errno.EACCES)
            vm_flags |= VM_SHARED | VM_MAYSHARE
            if not file.writable:
                vm_flags &= ~(VM_MAYWRITE | VM_SHARED)
        elif maptype != MAP_PRIVATE:
            raise oserror(errno.EINVAL)
        if not file.readable:
            raise oserror(errno.EACCES)
        if file.noexec:
            if vm_flags & VM_EXEC:
                raise oserror(errno.EPERM)
            vm_flags &= ~VM_MAYEXEC
        if vm_flags & VM_GROWSDOWN:
            raise oserror(errno.EINVAL)
    else:
        maptype = flags & MAP_TYPE
        if maptype == MAP_SHARED:
            if vm_flags & VM_GROWSDOWN:
                raise oserror(errno.EINVAL)
            pgoff = 0
            vm_flags |= VM_SHARED | VM_MAYSHARE
        elif maptype in (MAP_PRIVATE, MAP_DROPPABLE):
            if maptype == MAP_DROPPABLE:
                if flags & MAP_LOCKED or vm_flags & VM_GROWSDOWN:
                    raise oserror(errno.EINVAL)
                vm_flags |= VM_DROPPABLE | VM_NORESERVE | VM_WIPEONFORK | VM_DONTDUMP
            pgoff = addr >> PAGE_SHIFT
        else:
            raise oserror(errno.EINVAL)
    if flags & MAP_NORESERVE and cfg.overcommit_memory != 2:
        vm_flags |= VM_NORESERVE
    if flags & MAP_NORESERVE and file is not None and file.inode.huge_shift:
        vm_flags |= VM_NORESERVE  # hugetlb applies strict overcommit unless MAP_NORESERVE

    addr = mmap_region(mm, file, addr, length, vm_flags, pgoff, new_shmem)
    populate = 0
    if vm_flags & VM_LOCKED or (flags & (MAP_POPULATE | MAP_NONBLOCK)) == MAP_POPULATE:
        populate = length
    return addr, populate


def mmap_region(
    mm: AddressSpace,
    file: OpenFile | None,
    addr: int,
    length: int,
    vm_flags: int,
    pgoff: int,
    new_shmem: object,
) -> int:
    """__mmap_region(): unmap what is in the way, account, merge or insert."""
    end = addr + length
    if mm.mem.ksm is not None:  # ksm_vma_flags(): MMF_VM_MERGE_ANY makes it VM_MERGEABLE
        vm_flags = mm.mem.ksm.vma_flags(mm, file, vm_flags)
    tree = mm.tree
    first = tree.find_intersection(addr, end)
    doomed: list[Vma] = []
    nr_accounted = 0
    if first is not None:
        doomed = mm.gather_munmap(addr, end, first)
        nr_accounted = sum(v.pages for v in doomed if v.flags & VM_ACCOUNT)
    mm.may_expand_vm(vm_flags, (length >> PAGE_SHIFT) - sum(v.pages for v in doomed))
    huge = file is not None and file.inode.huge_shift
    # accountable_mapping(): private writable, not MAP_NORESERVE, not hugetlbfs
    if (vm_flags & (VM_NORESERVE | VM_SHARED | VM_WRITE)) == VM_WRITE and not huge:
        charged = (length >> PAGE_SHIFT) - nr_accounted
        if charged > 0 and not mm.vm_enough_memory(charged):
            raise mm.commit_error(charged)
        if charged < 0:
            mm.vm_unacct(-charged)
        vm_flags |= VM_ACCOUNT
        # the pages of the doomed VMAs carry over to this mapping
        for v in doomed:
            v.flags &= ~VM_ACCOUNT
    if doomed:
        mm.remove_vmas(doomed)
    if huge:
        assert file is not None
        # mmap_file() -> hugetlbfs_file_mmap(): after the old mappings are gone (a refused
        # reservation leaves the range empty, as the kernel does)
        vm_flags = hugetlb.hugetlbfs_file_mmap(mm, file, length, vm_flags, pgoff)

    if file is None and vm_flags & VM_SHARED:
        file = new_shmem(length)  # type: ignore[operator]
        assert isinstance(file, OpenFile)
    prev = tree.prev_of(addr)
    nxt = tree.find(addr)
    vma: Vma | None = None
    if (prev is not None or nxt is not None) and not (vm_flags & VM_SHARED and file is None):
        vma = mm.merge_new_range(addr, end, vm_flags, file, pgoff, prev, nxt)
    if vma is None:
        vma = Vma(addr, end, vm_flags, pgoff, file)
        tree.insert_new(vma)
    if vm_flags & VM_LOCKED:
        if vm_flags & VM_SPECIAL:
            vma.flags &= ~VM_LOCKED_MASK
        else:
            mm.locked_vm += length >> PAGE_SHIFT
    return addr


# ----------------------------------------------------------------------- munmap
def do_munmap_syscall(mm: AddressSpace, start: int, length: int) -> None:
    """do_vmi_munmap(): validate, then unmap; an empty range is not an error."""
    task_size = mm.cfg.task_size
    if start & (PAGE_SIZE - 1) or start > task_size or length > task_size - start:
        raise oserror(errno.EINVAL)
    end = start + page_align(length)
    if end == start:
        raise oserror(errno.EINVAL)
    huge_memory.vma_adjust_trans_huge(mm, start, end)  # __split_vma() of the edges
    vma_ops.do_vmi_munmap(mm, start, end)


# -------------------------------------------------------------------------- brk
def do_brk(mm: AddressSpace, brk: int) -> int:
    """sys_brk(): move the break; on any failure return the old break unchanged."""
    origbrk = mm.brk
    if brk < mm.start_brk:
        return origbrk
    newbrk = page_align(brk)
    oldbrk = page_align(mm.brk)
    if oldbrk == newbrk:
        mm.brk = brk
        return brk
    if brk <= mm.brk:
        brkvma = mm.tree.find_intersection(newbrk, oldbrk)
        if brkvma is None:
            return origbrk
        try:
            mm.remove_vmas(mm.gather_munmap(newbrk, oldbrk, brkvma))
        except OSError:
            return origbrk
        mm.brk = brk
        return brk
    nxt = mm.tree.find_intersection(oldbrk, newbrk + PAGE_SIZE + (256 << PAGE_SHIFT))
    if nxt is not None and newbrk + PAGE_SIZE > vm_start_gap(nxt):
        return origbrk
    # check_brk_limits(): get_unmapped_area(MAP_FIXED) of [oldbrk, newbrk); PAGE_ALIGN() of
    # a break near 2**64 wraps newbrk to 0, and the length with it
    length = (newbrk - oldbrk) & U64
    if length > mm.cfg.task_size or oldbrk > mm.cfg.task_size - length:
        return origbrk
    brkvma = mm.tree.prev_of(oldbrk)
    if brkvma is not None and brkvma.end <= mm.start_brk:
        brkvma = None
    if not do_brk_flags(mm, brkvma, oldbrk, newbrk - oldbrk):
        return origbrk
    mm.brk = brk
    if mm.def_flags & VM_LOCKED:  # mlockall(MCL_FUTURE): the new heap is populated
        mm.populate(oldbrk, newbrk, ignore_errors=True)
    return brk


def do_brk_flags(mm: AddressSpace, vma: Vma | None, addr: int, length: int, extra: int = 0) -> bool:
    """do_brk_flags(): extend the heap VMA in place or add a new one (also the ELF
    loader's bss, through vm_brk_flags(), with ``extra`` = VM_EXEC for an executable one)."""
    try:
        mm.may_expand_vm(VM_DATA_DEFAULT_FLAGS, length >> PAGE_SHIFT)
        mm.check_map_count(len(mm.tree), "do_brk_flags()")
    except OSError:
        return False
    if not mm.vm_enough_memory(length >> PAGE_SHIFT):
        return False
    flags = VM_DATA_DEFAULT_FLAGS | VM_ACCOUNT | extra | mm.def_flags
    if mm.mem.ksm is not None:  # ksm_vma_flags()
        flags = mm.mem.ksm.vma_flags(mm, None, flags)
    if vma is not None and vma.end == addr:
        merged = mm.merge_new_range(
            addr, addr + length, flags, None, addr >> PAGE_SHIFT, vma, None, just_expand=True
        )
        if merged is not None:
            return True
    mm.tree.insert_new(Vma(addr, addr + length, flags, addr >> PAGE_SHIFT))
    return True


def shmem_file(length: int, name: str = "/dev/zero", ino: int = 0) -> OpenFile:
    """shmem_zero_setup(): the unlinked tmpfs file behind MAP_SHARED|MAP_ANONYMOUS."""
    inode = Inode(path=name, dev=(0, 1), ino=ino, size=length, shmem=True, deleted=True)
    return OpenFile(inode)


_ = PROT_EXEC  # PROT_EXEC-only mappings would take an execute-only pkey (not modelled)


__all__ = [
    "LEGACY_MAP_MASK",
    "MAX_LFS_FILESIZE",
    "arch_get_unmapped_area",
    "arch_get_unmapped_area_topdown",
    "do_brk",
    "do_brk_flags",
    "do_mmap",
    "do_munmap_syscall",
    "get_unmapped_area",
    "mmap_region",
    "placement_error",
    "shmem_file",
    "unmapped_area",
    "unmapped_area_topdown",
]
