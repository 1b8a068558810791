"""/proc/<pid>/maps, smaps, smaps_rollup and pagemap, byte for byte as fs/proc/task_mmu.c
prints them.

Page counters of smaps come from the page tables as smaps_pte_entry()/smaps_account() count
them: the zero page is not counted; a page whose refcount is 1 is private; otherwise its
precise map count decides shared or private and divides Pss (kept, as in the kernel, in
fixed point with PSS_SHIFT 12 so that rounding is the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vmsim.constants import PAGE_SHIFT, PAGE_SIZE, PMD_SIZE
from vmsim.hw.pagetable import PMD_LEVEL
from vmsim.hw.pte import (
    PAGE_ACCESSED,
    PAGE_DIRTY,
    PAGE_PRESENT,
    PAGE_PROTNONE,
    pfn_of,
    swp_offset,
    swp_type,
)
from vmsim.mm import mthp
from vmsim.mm.flags import (
    VM_EXEC,
    VM_HUGEPAGE,
    VM_HUGETLB,
    VM_LOCKED,
    VM_MAYSHARE,
    VM_NOHUGEPAGE,
    VM_READ,
    VM_SHARED,
    VM_SOFTDIRTY,
    VM_WRITE,
    vmflags_text,
)
from vmsim.mm.swapops import pte_to_swp_entry
from vmsim.mm.vma import Vma
from vmsim.phys.frames import PageFlag

if TYPE_CHECKING:
    from vmsim.mm.core import AddressSpace

_PRESENT = PAGE_PRESENT | PAGE_PROTNONE
_ANON = int(PageFlag.ANON)
_SWAPBACKED = int(PageFlag.SWAPBACKED)
_DIRTY = int(PageFlag.DIRTY)
_KSM = int(PageFlag.KSM)
_REFERENCED = int(PageFlag.REFERENCED)

GATE_START = 0xFFFFFFFFFF600000
GATE_END = 0xFFFFFFFFFF601000
GATE_LINE = "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n"

SMAPS_KB_FIELDS = (
    "Rss",
    "Pss",
    "Pss_Dirty",
    "Shared_Clean",
    "Shared_Dirty",
    "Private_Clean",
    "Private_Dirty",
    "Referenced",
    "Anonymous",
    "KSM",
    "LazyFree",
    "AnonHugePages",
    "ShmemPmdMapped",
    "FilePmdMapped",
    "Shared_Hugetlb",
    "Private_Hugetlb",
    "Swap",
    "SwapPss",
    "Locked",
)


def vma_name(mm: AddressSpace, vma: Vma) -> str | None:
    """get_vma_name(): file path, special name, [heap], [stack], or nothing."""
    if vma.file is not None:
        return vma.file.name
    if vma.name is not None:
        return vma.name
    if vma.start < mm.brk and vma.end > mm.start_brk:
        return "[heap]"
    # (an empty model process has no initial stack: start_stack 0 names nothing)
    if mm.start_stack and vma.start <= mm.start_stack <= vma.end:
        return "[stack]"
    return None


def header(
    vma_start: int,
    vma_end: int,
    flags: int,
    offset: int,
    dev: tuple[int, int],
    ino: int,
    name: str | None,
) -> str:
    """show_vma_header_prefix() + the name padded to column 73."""
    perms = (
        ("r" if flags & VM_READ else "-")
        + ("w" if flags & VM_WRITE else "-")
        + ("x" if flags & VM_EXEC else "-")
        + ("s" if flags & VM_MAYSHARE else "p")
    )
    line = f"{vma_start:08x}-{vma_end:08x} {perms} {offset:08x} {dev[0]:02x}:{dev[1]:02x} {ino} "
    if name is None:
        return line
    if len(line) < 72:
        line += " " * (72 - len(line))
    return line + " " + name


def _vma_header(mm: AddressSpace, vma: Vma) -> str:
    f = vma.file
    if f is not None:
        return header(
            vma.start,
            vma.end,
            vma.flags,
            vma.pgoff << PAGE_SHIFT,
            f.inode.dev,
            f.inode.ino,
            vma_name(mm, vma),
        )
    return header(vma.start, vma.end, vma.flags, 0, (0, 0), 0, vma_name(mm, vma))


# The perms column by (vm_flags & (VM_READ | VM_WRITE | VM_EXEC)) | (VM_MAYSHARE >> 4).
_PERMS = tuple(
    ("r" if k & VM_READ else "-")
    + ("w" if k & VM_WRITE else "-")
    + ("x" if k & VM_EXEC else "-")
    + ("s" if k & (VM_MAYSHARE >> 4) else "p")
    for k in range(16)
)


def maps_text(mm: AddressSpace, gate: bool = True) -> str:
    """show_map(): one header line per VMA. An anonymous VMA without a name (most of them,
    in a process cut into 65,530 pieces) is written in one format step: the same text as
    ``_vma_header()`` gives it (offset 0, device 00:00, inode 0, no name)."""
    brk = mm.brk
    start_brk = mm.start_brk
    start_stack = mm.start_stack
    out = []
    for v in mm.tree:
        start = v.start
        end = v.end
        if (
            v.file is None
            and v.name is None
            and not (start < brk and end > start_brk)
            and not (start_stack and start <= start_stack <= end)
        ):
            flags = v.flags
            perms = _PERMS[(flags & 7) | ((flags & VM_MAYSHARE) >> 4)]
            out.append(f"{start:08x}-{end:08x} {perms} 00000000 00:00 0 \n")
        else:
            out.append(_vma_header(mm, v) + "\n")
    if gate:
        out.append(GATE_LINE)
    return "".join(out)


def _kb(label: str, value: int) -> str:
    return f"{label + ':':<16}{value:>8} kB\n"


def thp_eligible(mm: AddressSpace, vma: Vma) -> int:
    """thp_vma_allowable_orders(..., TVA_SMAPS, THP_ORDERS_ALL) for anonymous memory: the
    PMD size as below, or an mTHP size (``vmsim.mm.mthp.smaps_eligible()``)."""
    if vma.is_anonymous and mthp.smaps_eligible(mm, vma):
        return 1
    thp = mm.mem.thp.settings.pmd_mode()
    if thp == "never" or vma.flags & VM_NOHUGEPAGE:
        return 0
    if thp == "madvise" and not vma.flags & VM_HUGEPAGE:
        return 0
    if not vma.is_anonymous or vma.flags & VM_SHARED:
        return 0
    haddr = (vma.end - PMD_SIZE) & ~(PMD_SIZE - 1)
    return 1 if haddr >= vma.start and haddr + PMD_SIZE <= vma.end else 0


PSS_SHIFT = 12


@dataclass(slots=True)
class MemSizeStats:
    """struct mem_size_stats: byte counters (pss_* in bytes << PSS_SHIFT)."""

    anonymous: int = 0
    anonymous_thp: int = 0
    ksm: int = 0
    lazyfree: int = 0
    private_clean: int = 0
    private_dirty: int = 0
    pss: int = 0
    pss_anon: int = 0
    pss_dirty: int = 0
    pss_file: int = 0
    pss_locked: int = 0
    pss_shmem: int = 0
    referenced: int = 0
    resident: int = 0
    shared_clean: int = 0
    shared_dirty: int = 0
    swap: int = 0
    swap_pss: int = 0
    shared_hugetlb: int = 0
    private_hugetlb: int = 0

    def kb_fields(self, rollup: bool = False) -> list[tuple[str, int]]:
        """(label, kB) in the order __show_smap() prints them."""
        sh = PSS_SHIFT + 10
        out = [
            ("Rss", self.resident >> 10),
            ("Pss", self.pss >> sh),
            ("Pss_Dirty", self.pss_dirty >> sh),
        ]
        if rollup:
            out += [
                ("Pss_Anon", self.pss_anon >> sh),
                ("Pss_File", self.pss_file >> sh),
                ("Pss_Shmem", self.pss_shmem >> sh),
            ]
        out += [
            ("Shared_Clean", self.shared_clean >> 10),
            ("Shared_Dirty", self.shared_dirty >> 10),
            ("Private_Clean", self.private_clean >> 10),
            ("Private_Dirty", self.private_dirty >> 10),
            ("Referenced", self.referenced >> 10),
            ("Anonymous", self.anonymous >> 10),
            ("KSM", self.ksm >> 10),
            ("LazyFree", self.lazyfree >> 10),
            ("AnonHugePages", self.anonymous_thp >> 10),
            ("ShmemPmdMapped", 0),
            ("FilePmdMapped", 0),
            ("Shared_Hugetlb", self.shared_hugetlb >> 10),
            ("Private_Hugetlb", self.private_hugetlb >> 10),
            ("Swap", self.swap >> 10),
            ("SwapPss", self.swap_pss >> sh),
            ("Locked", self.pss_locked >> sh),
        ]
        return out


def smaps_account(mm: AddressSpace, vma: Vma, mss: MemSizeStats) -> None:
    """smap_gather_stats() for one VMA: walk its PTEs; in a shmem VMA the pages swapped out
    from the page cache count as Swap too (smaps_pte_hole_lookup())."""
    f = vma.file
    if vma.flags & VM_HUGETLB:
        _smaps_hugetlb(mm, vma, mss)
        return
    if f is not None and f.inode.shmem and f.inode.swapped:
        first, last = vma.pgoff, vma.pgoff + vma.pages
        for pg in f.inode.swapped:
            if first <= pg < last:
                leaf = mm.pt.get(vma.start + ((pg - first) << PAGE_SHIFT)) if mm.pt_used else None
                if leaf is None or not leaf.entry:
                    mss.swap += 4096
                    mss.swap_pss += 4096 << PSS_SHIFT
    if not mm.pt_used or vma.start >= vma.end:
        return
    frames = mm.mem.frames
    zero = frames.zero_pfn
    locked = bool(vma.flags & VM_LOCKED)
    size = 4096
    swap = mm.mem.swap
    for m in mm.pt.iter_leaves(vma.start, vma.end):
        e = m.entry
        if m.level == PMD_LEVEL:
            _smaps_pmd_entry(mm, vma, e, mss)
            continue
        if not e & _PRESENT:  # a swap entry: Swap, and SwapPss divided by its swap count
            mss.swap += size
            count = swap.count(pte_to_swp_entry(e))
            mss.swap_pss += (size << PSS_SHIFT) // count if count >= 2 else size << PSS_SHIFT
            continue
        pfn = pfn_of(e)
        if pfn == zero:
            continue
        flags = frames.flags(pfn)
        dirty = bool(e & PAGE_DIRTY)
        young = bool(e & PAGE_ACCESSED)
        if flags & _ANON:
            mss.anonymous += size
            if not flags & _SWAPBACKED and not dirty and not flags & _DIRTY:
                mss.lazyfree += size
        if flags & _KSM:
            mss.ksm += size
        mss.resident += size
        if young or flags & _REFERENCED:
            mss.referenced += size
        # folio_precise_page_mapcount(), skipped when only this mapping holds the folio
        mapcount = 1 if frames.refcount(pfn) == 1 else frames.page_mapcount(pfn)
        _smaps_page_accumulate(mss, size, mapcount, flags, dirty or bool(flags & _DIRTY), locked)


def _smaps_page_accumulate(
    mss: MemSizeStats, size: int, mapcount: int, flags: int, dirty: bool, locked: bool
) -> None:
    """smaps_page_accumulate(): one page's share of Pss (its size over its mapcount), and
    whether it counts as private or shared, clean or dirty."""
    private = mapcount < 2
    pss = size << PSS_SHIFT
    if not private:
        pss //= mapcount
    mss.pss += pss
    if flags & _ANON:
        mss.pss_anon += pss
    elif flags & _SWAPBACKED:
        mss.pss_shmem += pss
    else:
        mss.pss_file += pss
    if locked:
        mss.pss_locked += pss
    if dirty:
        mss.pss_dirty += pss
        if private:
            mss.private_dirty += size
        else:
            mss.shared_dirty += size
    elif private:
        mss.private_clean += size
    else:
        mss.shared_clean += size


def _smaps_hugetlb(mm: AddressSpace, vma: Vma, mss: MemSizeStats) -> None:
    """smaps_hugetlb_range(): each huge page mapped counts in Shared_Hugetlb if another
    mapping holds it (folio_maybe_mapped_shared() or a page-cache page mapped twice),
    else in Private_Hugetlb; Rss and the other counters do not see hugetlb pages."""
    if not mm.pt_used:
        return
    f = vma.file
    assert f is not None
    size = 1 << f.inode.huge_shift
    frames = mm.mem.frames
    for haddr in range(vma.start, vma.end, size):
        leaf = mm.pt.get(haddr)
        if leaf is None or not leaf.entry & _PRESENT:
            continue
        pfn = pfn_of(leaf.entry, leaf.level)
        if frames.mapcount(pfn) >= 2:
            mss.shared_hugetlb += size
        else:
            mss.private_hugetlb += size


def _page_size_kb(vma: Vma) -> int:
    """vma_kernel_pagesize() / vma_mmu_pagesize() in kB: the huge page size of a hugetlb
    VMA, else 4."""
    f = vma.file
    if f is not None and f.inode.huge_shift:
        return 1 << (f.inode.huge_shift - 10)
    return 4


def _smaps_pmd_entry(mm: AddressSpace, vma: Vma, e: int, mss: MemSizeStats) -> None:
    """smaps_pmd_entry() -> smaps_account(compound): a PMD-mapped THP counts 2 MiB resident
    (and in AnonHugePages), its Pss page by page from each page's mapcount; the huge zero
    page counts nothing (vm_normal_page_pmd() is NULL)."""
    frames = mm.mem.frames
    head = pfn_of(e, PMD_LEVEL)
    if head == mm.mem.thp.huge_zero_pfn or not e & _PRESENT:
        return
    flags = frames.flags(head)
    size = PMD_SIZE
    dirty = bool(e & PAGE_DIRTY)
    if flags & _ANON:
        mss.anonymous += size
        mss.anonymous_thp += size
        if not flags & _SWAPBACKED and not dirty and not flags & _DIRTY:
            mss.lazyfree += size
    mss.resident += size
    if e & PAGE_ACCESSED or flags & _REFERENCED:
        mss.referenced += size
    locked = bool(vma.flags & VM_LOCKED)
    one = frames.refcount(head) == 1
    for i in range(PMD_SIZE // PAGE_SIZE):
        mapcount = 1 if one else frames.page_mapcount(head + i)
        _smaps_page_accumulate(
            mss, PAGE_SIZE, mapcount, flags, dirty or bool(flags & _DIRTY), locked
        )


def _smaps_block(
    head: str,
    size_kb: int,
    thp: int,
    flags_text: str,
    pkeys: bool,
    mss: MemSizeStats | None = None,
    page_kb: int = 4,
) -> str:
    parts = [
        head,
        "\n",
        _kb("Size", size_kb),
        _kb("KernelPageSize", page_kb),
        _kb("MMUPageSize", page_kb),
    ]
    if mss is None:
        parts.extend(_kb(label, 0) for label in SMAPS_KB_FIELDS)
    else:
        parts.extend(_kb(label, kb) for label, kb in mss.kb_fields())
    parts.append(f"{'THPeligible:':<16}{thp:>8}\n")
    if pkeys:
        parts.append(f"{'ProtectionKey:':<16}{0:>8}\n")
    parts.append(f"VmFlags: {flags_text}\n")
    return "".join(parts)


def smaps_text(mm: AddressSpace, pkeys: bool = False, gate: bool = True) -> str:
    out = []
    for v in mm.tree:
        mss = MemSizeStats()
        smaps_account(mm, v, mss)
        out.append(
            _smaps_block(
                _vma_header(mm, v),
                (v.end - v.start) >> 10,
                thp_eligible(mm, v),
                vmflags_text(v.flags),
                pkeys,
                mss,
                _page_size_kb(v),
            )
        )
    if gate:
        out.append(_smaps_block(GATE_LINE[:-1], 4, 0, "ex ", pkeys))
    return "".join(out)


def smaps_rollup_text(mm: AddressSpace) -> str:
    """/proc/<pid>/smaps_rollup: show_smaps_rollup() (the gate VMA is not included)."""
    mss = MemSizeStats()
    first = mm.tree.first()
    if first is None:
        return ""
    last_end = first.end
    for v in mm.tree:
        smaps_account(mm, v, mss)
        last_end = v.end
    head = header(first.start, last_end, 0, 0, (0, 0), 0, "[rollup]")
    return head + "\n" + "".join(_kb(label, kb) for label, kb in mss.kb_fields(rollup=True))


# pagemap bits (Documentation/admin-guide/mm/pagemap.rst, fs/proc/task_mmu.c)
PM_PFRAME_MASK = (1 << 55) - 1
PM_SOFT_DIRTY = 1 << 55
PM_MMAP_EXCLUSIVE = 1 << 56
PM_UFFD_WP = 1 << 57
PM_GUARD_REGION = 1 << 58
PM_FILE = 1 << 61
PM_SWAP = 1 << 62
PM_PRESENT = 1 << 63
_GUARD_SWP_FRAME = 31 | (4 << 5)  # SWP_PTE_MARKER | PTE_MARKER_GUARD << MAX_SWAPFILES_SHIFT


def pagemap_entries(mm: AddressSpace, addr: int, npages: int, show_pfn: bool = True) -> list[int]:
    """/proc/<pid>/pagemap: one 64-bit entry per page from ``addr`` (pagemap_pte_range());
    ``show_pfn`` is CAP_SYS_ADMIN (root): otherwise the frame bits read 0."""
    frames = mm.mem.frames
    zero = frames.zero_pfn
    out = []
    vpn0 = addr >> PAGE_SHIFT
    for i in range(npages):
        a = (vpn0 + i) << PAGE_SHIFT
        vma = mm.tree.lookup(a)
        if vma is None:
            out.append(0)
            continue
        flags = PM_SOFT_DIRTY if vma.flags & VM_SOFTDIRTY else 0
        frame = 0
        leaf = mm.pt.get(a) if mm.pt_used else None
        e = leaf.entry if leaf is not None else 0
        if e & _PRESENT:
            flags |= PM_PRESENT
            assert leaf is not None
            pfn = pfn_of(e, leaf.level)
            if leaf.level > 1:  # a huge leaf: the subpage's frame (pagemap_hugetlb_range())
                pfn += (a >> PAGE_SHIFT) & ((1 << 9 * (leaf.level - 1)) - 1)
            frame = pfn
            if pfn != zero:
                if not frames.flags(pfn) & _ANON:
                    flags |= PM_FILE
                # pagemap_pmd_range_thp() asks about the PMD's page (the head) for every
                # subpage; pagemap_pte_range() about the page itself
                page = pfn_of(e, leaf.level) if leaf.level > 1 else pfn
                if frames.page_mapcount(page) == 1:
                    flags |= PM_MMAP_EXCLUSIVE
        elif e:  # a swap entry: type and offset in the frame bits
            flags |= PM_SWAP
            frame = swp_type(e) | (swp_offset(e) << 5)
        elif mm.guards and (a >> PAGE_SHIFT) in mm.guards:
            flags |= PM_SWAP | PM_GUARD_REGION
            frame = _GUARD_SWP_FRAME
        if not show_pfn:
            frame = 0
        out.append(flags | (frame & PM_PFRAME_MASK))
    return out


__all__ = [
    "GATE_END",
    "GATE_LINE",
    "GATE_START",
    "PM_FILE",
    "PM_GUARD_REGION",
    "PM_MMAP_EXCLUSIVE",
    "PM_PFRAME_MASK",
    "PM_PRESENT",
    "PM_SOFT_DIRTY",
    "PM_SWAP",
    "PM_UFFD_WP",
    "PSS_SHIFT",
    "SMAPS_KB_FIELDS",
    "MemSizeStats",
    "header",
    "maps_text",
    "pagemap_entries",
    "smaps_account",
    "smaps_rollup_text",
    "smaps_text",
    "thp_eligible",
    "vma_name",
]
