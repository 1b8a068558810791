"""Transparent huge pages (mm/huge_memory.c of Linux 6.18): settings, the PMD fault path,
the huge zero page, fork, copy-on-write, zap, mprotect and splits of PMD-mapped THPs, and the
deferred split queue.

One module, as mm/huge_memory.c is one file (khugepaged is apart, in vmsim.mm.khugepaged, as
in Linux): every PMD-level operation here keeps the same folio and deposit state in step.

A PMD-mapped THP is a folio of order 9 (512 pages) mapped by one PMD leaf with PS set. As in
the kernel, that mapping holds one reference and one entire mapcount on the folio
(``FrameAllocator.map_pmd``), and the reverse map names it once, at the head pfn with the
PMD's address. Splitting the PMD (``split_huge_pmd``: __split_huge_pmd_locked()) turns it
into 512 PTEs, each holding a reference and a page mapcount; the folio stays large until the
deferred split shrinker (``deferred_split_scan``) or reclaim splits it, once it is only
partly mapped. The page table a PMD leaf will need when it is split is deposited with it
(pgtable_trans_huge_deposit()): one PAGETABLE frame per PMD-mapped THP, counted in
PageTables, kept in ``ThpState.deposit``.

The huge zero page (a read fault with use_zero_page) is one order-9 folio allocated on first
use and kept for the machine's life (the kernel frees it from a shrinker once no PMD maps it;
with nothing else running that changes only ``thp_zero_page_alloc``). Its PMDs are special:
no reference, no mapcount, no rmap (vm_normal_page_pmd() is NULL).

A THP is allocated with the gfp mask the kernel would use (``vma_thp_gfp_mask`` at fault by
the defrag setting, ``collapse_gfp_mask`` for a collapse); the page allocator's costly-order
slow path (``vmsim.mm.page_alloc.alloc_costly``) then compacts, reclaims or wakes kswapd as
the mask allows. mlock of THPs is vmsim.mm.mlock's; the hooks here are where the kernel's
rmap calls it (a new PMD mapping in a VM_LOCKED VMA, a PMD zap there).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from vmsim.constants import PAGE_SIZE, PMD_SIZE
from vmsim.hw.pagetable import PMD_LEVEL
from vmsim.hw.pte import (
    PAGE_ACCESSED,
    PAGE_DIRTY,
    PAGE_PRESENT,
    PAGE_PROTNONE,
    PAGE_PSE,
    PAGE_RW,
    PAGE_SPECIAL,
    pfn_of,
    pfn_pte,
)
from vmsim.mm.flags import (
    VM_HUGEPAGE,
    VM_HUGETLB,
    VM_IO,
    VM_LOCKED,
    VM_MIXEDMAP,
    VM_NOHUGEPAGE,
    VM_PFNMAP,
    VM_SHARED,
    VM_WRITE,
)
from vmsim.mm.internal import ANON_FLAGS, is_cow_mapping, page_prot
from vmsim.mm.mlock import mlock_vma_folio, munlock_vma_folio, split_mlock_counts
from vmsim.mm.mthp import count_mthp_stat
from vmsim.mm.page_alloc import GFP_DIRECT_RECLAIM, GFP_KSWAPD_RECLAIM, GFP_NORETRY
from vmsim.mm.rmap import rmap_add, rmap_remove
from vmsim.mm.vmstat import THP_VMSTAT_EVENTS
from vmsim.phys.frames import OutOfMemory, PageFlag

if TYPE_CHECKING:
    from vmsim.mm.core import AddressSpace
    from vmsim.mm.kernel import Kernel
    from vmsim.mm.vma import Vma

__all__ = [
    "DEFAULT_THP",
    "HPAGE_PMD_NR",
    "HPAGE_PMD_ORDER",
    "MTHP_SIZES_KB",
    "THP_VMSTAT_EVENTS",
    "ThpSettings",
    "ThpState",
    "alloc_thp",
    "change_huge_pmd",
    "collapse_gfp_mask",
    "copy_huge_pmd",
    "deferred_split_folio",
    "deferred_split_scan",
    "do_huge_pmd_anonymous_page",
    "do_huge_pmd_wp_page",
    "huge_pmd_set_accessed",
    "install_collapsed",
    "madvise_thp",
    "move_deposits",
    "note_pte_unmapped",
    "pmd_entry",
    "pmd_leaves",
    "prepare_move",
    "split_folio",
    "split_folio_everywhere",
    "split_huge_pmd",
    "split_huge_pmd_range",
    "thp_settings",
    "thp_vma_allowable",
    "vma_adjust_trans_huge",
    "vma_thp_gfp_mask",
    "zap_huge_pmd",
]

HPAGE_PMD_ORDER = 9
HPAGE_PMD_NR = 1 << HPAGE_PMD_ORDER
_PMD_MASK = ~(PMD_SIZE - 1)
_VM_SPECIAL = VM_IO | VM_PFNMAP | VM_MIXEDMAP | VM_HUGETLB
_ANON = int(PageFlag.ANON)
_DIRTY = int(PageFlag.DIRTY)
_PAGETABLE = int(PageFlag.PAGETABLE)
_MLOCKED = int(PageFlag.MLOCKED)
_SWAPBACKED = int(PageFlag.SWAPBACKED)
_REFERENCED = int(PageFlag.REFERENCED)
_ACTIVE = int(PageFlag.ACTIVE)
_HEAD = int(PageFlag.HEAD)
_PRESENT = PAGE_PRESENT | PAGE_PROTNONE

# The multi-size THP sizes of anonymous memory on x86-64 (hugepages-<size>kB/enabled): orders
# 2..9 (8 kB has only shmem_enabled).
MTHP_SIZES_KB = (16, 32, 64, 128, 256, 512, 1024, 2048)
_ENABLED = ("always", "madvise", "never")
_DEFRAG = ("always", "defer", "defer+madvise", "madvise", "never")
_SHMEM = ("always", "within_size", "advise", "never", "deny", "force")
_MTHP = ("always", "inherit", "madvise", "never")


@dataclass(frozen=True)
class ThpSettings:
    """/sys/kernel/mm/transparent_hugepage: the defaults are the reference machine's
    (tests/differential/test_thp_settings.py reads its sysfs and compares)."""

    enabled: str = "madvise"
    defrag: str = "madvise"
    use_zero_page: bool = True
    shmem_enabled: str = "never"
    # khugepaged/
    khugepaged_defrag: bool = True
    pages_to_scan: int = 4096
    scan_sleep_millisecs: int = 10000
    alloc_sleep_millisecs: int = 60000
    max_ptes_none: int = 511
    max_ptes_swap: int = 64
    max_ptes_shared: int = 256
    # hugepages-<size>kB/enabled, by size in kB: 2048 inherits the top-level mode, the
    # smaller sizes are off
    mthp: tuple[tuple[int, str], ...] = tuple(
        (kb, "inherit" if kb == 2048 else "never") for kb in MTHP_SIZES_KB
    )

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("enabled", self.enabled, _ENABLED),
            ("defrag", self.defrag, _DEFRAG),
            ("shmem_enabled", self.shmem_enabled, _SHMEM),
        ):
            if value not in allowed:
                raise ValueError(f"thp {name} must be one of {', '.join(allowed)}, not {value!r}")
        for name, lo, hi in (
            ("pages_to_scan", 1, (1 << 32) - 1),
            ("scan_sleep_millisecs", 0, (1 << 32) - 1),
            ("alloc_sleep_millisecs", 0, (1 << 32) - 1),
            ("max_ptes_none", 0, HPAGE_PMD_NR - 1),
            ("max_ptes_swap", 0, HPAGE_PMD_NR - 1),
            ("max_ptes_shared", 0, HPAGE_PMD_NR - 1),
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ValueError(f"thp {name} must be an integer within {lo}..{hi}, got {v!r}")
        sizes = [kb for kb, _ in self.mthp]
        if sorted(sizes) != list(MTHP_SIZES_KB):
            raise ValueError(f"thp mthp must give each of the sizes {MTHP_SIZES_KB} (kB) once")
        for kb, mode in self.mthp:
            if mode not in _MTHP:
                raise ValueError(
                    f"thp hugepages-{kb}kB enabled must be one of {', '.join(_MTHP)}, not {mode!r}"
                )

    def mthp_mode(self, kb: int) -> str:
        return dict(self.mthp)[kb]

    def pmd_mode(self) -> str:
        """The mode that applies to PMD-sized THPs: hugepages-2048kB/enabled, or the top
        level one when it says inherit (hugepage_global_enabled() and huge_anon_orders_*)."""
        mode = self.mthp_mode(2048)
        return self.enabled if mode == "inherit" else mode


DEFAULT_THP = ThpSettings()
_KEYS = {f for f in ThpSettings.__dataclass_fields__ if f != "mthp"}


def thp_settings(value: str | ThpSettings | dict[str, Any] | None) -> ThpSettings:
    """``Machine(thp=...)``: "always" / "madvise" / "never" (``enabled``), a dict of the
    fields of ``ThpSettings`` (``mthp`` as {size_kb: mode}, only the sizes to change), or
    a ``ThpSettings``."""
    if value is None:
        return DEFAULT_THP
    if isinstance(value, ThpSettings):
        return value
    if isinstance(value, str):
        if value not in _ENABLED:
            raise ValueError(f"thp must be always, madvise or never, not {value!r}")
        return replace(DEFAULT_THP, enabled=value)
    if not isinstance(value, dict):
        raise ValueError(f"thp must be a mode string, a dict or ThpSettings, not {value!r}")
    unknown = set(value) - _KEYS - {"mthp"}
    if unknown:
        raise ValueError(f"unknown thp setting(s): {', '.join(sorted(map(str, unknown)))}")
    kw = {k: v for k, v in value.items() if k != "mthp"}
    mthp = dict(DEFAULT_THP.mthp)
    given = value.get("mthp", {})
    if not isinstance(given, dict):
        raise ValueError("thp mthp must be a dict {size_kb: mode}")
    for kb, mode in given.items():
        if kb not in mthp:
            raise ValueError(f"thp mthp: no size {kb!r} kB (sizes: {MTHP_SIZES_KB})")
        mthp[kb] = mode
    return ThpSettings(**kw, mthp=tuple(sorted(mthp.items())))


@dataclass
class ThpState:
    """The machine's THP state (one per ``Kernel``)."""

    settings: ThpSettings = DEFAULT_THP
    huge_zero_pfn: int | None = None  # huge_zero_folio, allocated on first use
    # pgtable_trans_huge_deposit(): mm serial -> {haddr: the deposited PTE table's frame},
    # one per PMD leaf: also the index of every mm's PMD leaves
    deposit: dict[int, dict[int, int]] = field(default_factory=dict)
    # deferred_split_queue: large folios (head pfn) to split under memory pressure, in the
    # order queued; the value says whether it is partly mapped (folio_test_partially_mapped)
    deferred: dict[int, bool] = field(default_factory=dict)
    # khugepaged (vmsim.mm.khugepaged): where the last wake-up stopped (mm serial, address),
    # khugepaged/full_scans, khugepaged/pages_collapsed
    cursor: tuple[int, int] = (0, 0)
    full_scans: int = 0
    pages_collapsed: int = 0
    # hugepages-<size>kB/stats counters: (order, item) -> count (vmsim.mm.mthp)
    mthp_stats: dict[tuple[int, str], int] = field(default_factory=dict)


# ------------------------------------------------------------------------ helpers
def pmd_entry(mm: AddressSpace, addr: int) -> int:
    """The PMD slot covering ``addr`` (0 if none): a table pointer or a leaf."""
    return mm.pt.entries[PMD_LEVEL].get((addr & mm.pt.va_mask) >> 21, 0)


def _is_huge(entry: int) -> bool:
    return bool(entry & PAGE_PSE) and bool(entry & _PRESENT)


def _count(mem: Kernel, name: str, n: int = 1) -> None:
    mem.vmstat[name] += n


def thp_vma_allowable(mm: AddressSpace, vma: Vma, addr: int) -> bool:
    """thp_vma_allowable_order(vma, TVA_PAGEFAULT, PMD_ORDER) and thp_vma_suitable_order()
    for an anonymous fault at ``addr``: the mode (hugepages-2048kB, else the global one),
    VM_HUGEPAGE for madvise, never VM_NOHUGEPAGE; private anonymous memory; the aligned 2 MiB
    around ``addr`` inside the VMA (no pgoff test for anonymous memory: a VMA mremap moved
    after its first fault keeps a pgoff incongruent with its start, and still gets THPs)."""
    flags = vma.flags
    if vma.file is not None or flags & (VM_SHARED | _VM_SPECIAL | VM_NOHUGEPAGE):
        return False
    mode = mm.mem.thp.settings.pmd_mode()
    if mode == "never" or (mode == "madvise" and not flags & VM_HUGEPAGE):
        return False
    haddr = addr & _PMD_MASK
    return vma.start <= haddr and haddr + PMD_SIZE <= vma.end


def _deposit(mm: AddressSpace, haddr: int) -> None:
    """pte_alloc_one() + pgtable_trans_huge_deposit()."""
    mem = mm.mem
    pfn = mem.alloc_folio(_PAGETABLE)
    mem.thp.deposit.setdefault(mm.serial, {})[haddr] = pfn


def _withdraw(mm: AddressSpace, haddr: int) -> None:
    """pgtable_trans_huge_withdraw() + pte_free(): the split builds its own PTE table."""
    d = mm.mem.thp.deposit.get(mm.serial)
    pfn = None if d is None else d.pop(haddr, None)
    if pfn is not None:
        mm.mem.frames.put(pfn)
    if d is not None and not d:
        del mm.mem.thp.deposit[mm.serial]


def pmd_leaves(mm: AddressSpace, start: int, end: int) -> list[int]:
    """The addresses of this mm's PMD leaves meeting ``[start, end)``, in order."""
    d = mm.mem.thp.deposit.get(mm.serial)
    if not d:
        return []
    return sorted(h for h in d if h < end and h + PMD_SIZE > start)


def _huge_zero_pfn(mem: Kernel) -> int | None:
    """mm_get_huge_zero_folio(): the huge zero folio, allocated on first use."""
    thp = mem.thp
    if thp.huge_zero_pfn is None:
        try:
            thp.huge_zero_pfn = mem.frames.alloc(0, order=HPAGE_PMD_ORDER)
        except OutOfMemory:
            _count(mem, "thp_zero_page_alloc_failed")
            return None
        _count(mem, "thp_zero_page_alloc")
    return thp.huge_zero_pfn


def vma_thp_gfp_mask(settings: ThpSettings, vma: Vma | None) -> int:
    """vma_thp_gfp_mask(): what a THP fault in ``vma`` may do to get its folio, by the
    defrag setting: always: compact and reclaim directly (GFP_TRANSHUGE), __GFP_NORETRY
    unless the VMA is madvised (VM_HUGEPAGE); defer: only wake kswapd (and through it
    kcompactd); defer+madvise: direct for a madvised VMA, wake kswapd otherwise; madvise:
    direct for a madvised VMA, nothing otherwise; never: nothing (GFP_TRANSHUGE_LIGHT)."""
    madvised = vma is not None and bool(vma.flags & VM_HUGEPAGE)
    defrag = settings.defrag
    if defrag == "always":
        return GFP_DIRECT_RECLAIM | (0 if madvised else GFP_NORETRY)
    if defrag == "defer":
        return GFP_KSWAPD_RECLAIM
    if defrag == "defer+madvise":
        return GFP_DIRECT_RECLAIM if madvised else GFP_KSWAPD_RECLAIM
    if defrag == "madvise":
        return GFP_DIRECT_RECLAIM if madvised else 0
    return 0


def collapse_gfp_mask(settings: ThpSettings, khugepaged: bool) -> int:
    """alloc_charge_folio()'s mask: khugepaged's alloc_hugepage_khugepaged_gfpmask()
    (GFP_TRANSHUGE if khugepaged/defrag, else GFP_TRANSHUGE_LIGHT); MADV_COLLAPSE always
    GFP_TRANSHUGE (direct compaction and reclaim)."""
    if khugepaged and not settings.khugepaged_defrag:
        return 0
    return GFP_DIRECT_RECLAIM


def alloc_thp(mm: AddressSpace, vma: Vma | None = None, gfp: int | None = None) -> int | None:
    """vma_alloc_anon_folio_pmd(): an order-9 anonymous folio, or None. A fault (``vma``
    given) allocates with vma_thp_gfp_mask(), a collapse with the ``gfp`` it gives: the
    page allocator's slow path may wake kswapd/kcompactd or compact and reclaim directly
    (``Kernel.alloc_costly``). With neither, only a free block above the low watermark
    will do."""
    mem = mm.mem
    if vma is not None:
        gfp = vma_thp_gfp_mask(mem.thp.settings, vma)
    if gfp is not None:
        return mem.alloc_costly(ANON_FLAGS, HPAGE_PMD_ORDER, gfp)
    frames = mem.frames
    if frames.free_pages - HPAGE_PMD_NR < mem.node.wmark_low:
        return None
    try:
        return frames.alloc(ANON_FLAGS, order=HPAGE_PMD_ORDER)
    except OutOfMemory:
        return None


def _map_anon_folio_pmd(mm: AddressSpace, vma: Vma, haddr: int, head: int) -> None:
    """map_anon_folio_pmd(): a young, dirty PMD (writable in a VM_WRITE VMA), the folio
    on the LRU (mlocked whole in a VM_LOCKED VMA) and queued for the underused shrinker
    (deferred_split_folio(folio, false))."""
    mem = mm.mem
    entry = pfn_pte(head, page_prot(vma) | PAGE_PSE) | PAGE_DIRTY
    if vma.flags & VM_WRITE:
        entry |= PAGE_RW
    mem.frames.map_pmd(head)
    rmap_add(mem, head, mm, haddr)
    mem.node.lru.add(head)
    if not vma.flags & _VM_SPECIAL:  # folio_add_lru_vma(): mlock_new_folio() if VM_LOCKED
        mlock_vma_folio(mm, vma.flags, head)
    mem.thp.deferred[head] = False
    mm.pt.set(haddr, entry, PMD_LEVEL)


def install_collapsed(mm: AddressSpace, vma: Vma, haddr: int, head: int) -> None:
    """The end of collapse_huge_page(): the new THP mapped by a dirty PMD (writable in a
    VM_WRITE VMA), its page table deposited."""
    mm.pt.prealloc(haddr, PMD_LEVEL)
    _deposit(mm, haddr)
    _map_anon_folio_pmd(mm, vma, haddr, head)


# ---------------------------------------------------------------------- the fault
def do_huge_pmd_anonymous_page(mm: AddressSpace, vma: Vma, addr: int, write: bool) -> str | None:
    """do_huge_pmd_anonymous_page() for an empty PMD slot in an eligible VMA: the huge
    zero page on a read fault (use_zero_page), else a new THP. Returns "thp" or
    "huge-zero-page", or None for VM_FAULT_FALLBACK (the 4 KiB path runs)."""
    mem = mm.mem
    haddr = addr & _PMD_MASK
    mm.anon_vma_prepare(vma)  # vmf_anon_prepare(), read faults included
    if not write and mem.thp.settings.use_zero_page:
        zero = _huge_zero_pfn(mem)
        if zero is None:
            _count(mem, "thp_fault_fallback")
            return None
        _deposit(mm, haddr)
        entry = pfn_pte(zero, page_prot(vma) | PAGE_PSE) & ~PAGE_RW
        mm.pt.set(haddr, entry | PAGE_SPECIAL, PMD_LEVEL)
        return "huge-zero-page"
    head = alloc_thp(mm, vma)
    if head is None:
        _count(mem, "thp_fault_fallback")
        count_mthp_stat(mem, HPAGE_PMD_ORDER, "anon_fault_fallback")
        return None
    _deposit(mm, haddr)
    _map_anon_folio_pmd(mm, vma, haddr, head)
    _count(mem, "thp_fault_alloc")
    count_mthp_stat(mem, HPAGE_PMD_ORDER, "anon_fault_alloc")
    return "thp"


def huge_pmd_set_accessed(mm: AddressSpace, addr: int, write: bool) -> None:
    """huge_pmd_set_accessed(): a spurious fault on a PMD leaf that allows the access."""
    haddr = addr & _PMD_MASK
    e = pmd_entry(mm, haddr)
    new = e | PAGE_ACCESSED | (PAGE_DIRTY if write else 0)
    if new != e:
        mm.pt.set(haddr, new, PMD_LEVEL)


def _folio_exclusive(mm: AddressSpace, head: int) -> bool:
    """Whether only this PMD holds the folio (folio_ref_count() == 1 after dropping a swap
    cache copy: do_huge_pmd_wp_page()'s reuse test)."""
    return mm.mem.frames.refcount(head) == 1


def do_huge_pmd_wp_page(mm: AddressSpace, vma: Vma, addr: int) -> str | None:
    """do_huge_pmd_wp_page(): a write to a read-only PMD. The huge zero page is replaced
    by a new THP (do_huge_zero_wp_pmd()); a THP nobody else holds is reused (made writable,
    dirty, young); otherwise, or when no THP can be had, the PMD is split and the fault
    falls back to the PTEs (None)."""
    mem = mm.mem
    haddr = addr & _PMD_MASK
    e = pmd_entry(mm, haddr)
    pfn = pfn_of(e, PMD_LEVEL)
    if pfn == mem.thp.huge_zero_pfn:
        head = alloc_thp(mm, vma)
        if head is not None:
            mm.pt.set(haddr, 0, PMD_LEVEL)
            mem.cpu.flush_range(mm, haddr, haddr + PMD_SIZE)
            _map_anon_folio_pmd(mm, vma, haddr, head)
            _count(mem, "thp_fault_alloc")
            count_mthp_stat(mem, HPAGE_PMD_ORDER, "anon_fault_alloc")
            return "thp"
        _count(mem, "thp_fault_fallback")
        count_mthp_stat(mem, HPAGE_PMD_ORDER, "anon_fault_fallback")
    elif _folio_exclusive(mm, pfn):
        new = e | PAGE_ACCESSED | PAGE_DIRTY
        if vma.flags & VM_WRITE:
            new |= PAGE_RW
        mm.pt.set(haddr, new, PMD_LEVEL)
        return "reuse"
    split_huge_pmd(mm, vma, haddr)
    return None


# -------------------------------------------------------------------------- splits
def split_huge_pmd(mm: AddressSpace, vma: Vma | None, haddr: int) -> None:
    """__split_huge_pmd_locked(): the PMD leaf at ``haddr`` becomes 512 PTEs in a PTE
    table. The huge zero page becomes 512 special PTEs of the 4 KiB zero page; a THP's
    pages keep its write, young and dirty bits (a dirty PMD dirties the folio), each PTE
    taking a reference and a page mapcount, the PMD's own going (folio_remove_rmap_pmd())."""
    mem = mm.mem
    e = pmd_entry(mm, haddr)
    if not _is_huge(e):
        return
    _count(mem, "thp_split_pmd")
    frames = mem.frames
    head = pfn_of(e, PMD_LEVEL)
    mm.pt.set(haddr, 0, PMD_LEVEL)
    mem.cpu.flush_range(mm, haddr, haddr + PMD_SIZE)  # pmdp_invalidate()
    _withdraw(mm, haddr)
    mm.pt.prealloc(haddr)  # pmd_populate() with the (re-allocated) deposited table
    if vma is None:
        # the VMA still holding part of the 2 MiB (the part being unmapped may have left
        # the tree already: its PTEs are zapped right after)
        vma = mm.tree.lookup(haddr) or mm.tree.find_intersection(haddr, haddr + PMD_SIZE)
    assert vma is not None, f"PMD at {haddr:#x} outside every VMA"
    prot = page_prot(vma)
    bits = e & (PAGE_ACCESSED | PAGE_DIRTY | PAGE_RW)
    if head == mem.thp.huge_zero_pfn:  # __split_huge_zero_page_pmd()
        zero = frames.zero_pfn
        pte = (pfn_pte(zero, prot) & ~PAGE_RW) | PAGE_SPECIAL
        for i in range(HPAGE_PMD_NR):
            mm.pt.set(haddr + i * PAGE_SIZE, pte)
        return
    if e & PAGE_DIRTY:
        frames.set_flags(head, _DIRTY)
    rmap_remove(mem, head, mm, haddr)
    for i in range(HPAGE_PMD_NR):
        pfn = head + i
        a = haddr + i * PAGE_SIZE
        frames.get(pfn)
        frames.map(pfn)
        rmap_add(mem, pfn, mm, a)
        pte = (pfn_pte(pfn, prot) & ~(PAGE_RW | PAGE_ACCESSED | PAGE_DIRTY)) | bits
        mm.pt.set(a, pte)
    # an mlocked THP stays mlocked: the kernel's split of a PMD in a VM_LOCKED VMA leaves
    # the folio's lock (kernel-checked: no unevictable_pgs_munlocked, KPF_MLOCKED stays),
    # unlike a zap of its PMD or of one of its PTEs there
    frames.unmap_pmd(head)
    frames.put(head)


def split_huge_pmd_range(mm: AddressSpace, start: int, end: int) -> None:
    """Split every PMD leaf meeting ``[start, end)`` (the model's way into code that works
    on PTEs only)."""
    for a in pmd_leaves(mm, start, end):
        if _is_huge(pmd_entry(mm, a)):
            split_huge_pmd(mm, None, a)


def prepare_move(mm: AddressSpace, start: int, end: int, delta: int) -> list[int]:
    """move_page_tables() before the move of ``[start, end)`` by ``delta``: the PMD leaves
    that move whole (inside the range, landing aligned: move_huge_pmd()); the others are
    split now."""
    whole = []
    for haddr in pmd_leaves(mm, start, end):
        if (
            start <= haddr
            and haddr + PMD_SIZE <= end
            and not (haddr + delta) % PMD_SIZE
            and not pmd_entry(mm, haddr + delta)
        ):
            whole.append(haddr)
        else:
            split_huge_pmd(mm, None, haddr)
    return whole


def move_deposits(mm: AddressSpace, haddrs: list[int], delta: int) -> None:
    """The deposited tables move with their PMDs (pgtable_trans_huge_withdraw/deposit)."""
    d = mm.mem.thp.deposit[mm.serial]
    moved = {h + delta: d.pop(h) for h in haddrs}
    d.update(moved)


def vma_adjust_trans_huge(mm: AddressSpace, start: int, end: int) -> None:
    """vma_adjust_trans_huge(): a VMA boundary is about to appear at ``start`` and/or
    ``end``; a PMD leaf straddling one is split first (split_huge_pmd_if_needed())."""
    if not mm.mem.thp.deposit.get(mm.serial):
        return
    for a in (start, end):
        if a & (PMD_SIZE - 1) and _is_huge(pmd_entry(mm, a)):
            split_huge_pmd(mm, None, a & _PMD_MASK)


def zap_huge_pmd(mm: AddressSpace, haddr: int, locked: bool = False) -> bool:
    """zap_huge_pmd(): clear a PMD leaf wholly inside a zapped range, dropping the folio's
    PMD mapping (the huge zero page's only loses its PMD; ``locked``: the VMA is VM_LOCKED,
    the folio is munlocked); its deposited table goes too. Returns whether there was a
    leaf."""
    mem = mm.mem
    e = pmd_entry(mm, haddr)
    if not e or not e & PAGE_PSE:
        return False
    mm.pt.clear(haddr, free_tables=False)
    _withdraw(mm, haddr)
    mem.cpu.flush_range(mm, haddr, haddr + PMD_SIZE)
    head = pfn_of(e, PMD_LEVEL)
    if head == mem.thp.huge_zero_pfn:
        return True
    frames = mem.frames
    rmap_remove(mem, head, mm, haddr)
    frames.unmap_pmd(head)
    if locked:  # munlock_vma_folio() of a VM_LOCKED VMA's PMD
        munlock_vma_folio(mm, VM_LOCKED, head)
    # __folio_remove_rmap(RMAP_LEVEL_PMD): the last PMD gone while only some pages are
    # mapped by PTEs (another process split its own PMD) leaves the folio partly mapped
    if (
        not frames.entire_mapcount(head)
        and frames.flags(head) & _ANON
        and 0 < frames.mapped_pages(head) < frames.folio_nr_pages(head)
    ):
        deferred_split_folio(mem, head, partially_mapped=True)
    frames.put(head)
    return True


def deferred_split_folio(mem: Kernel, head: int, partially_mapped: bool) -> None:
    """deferred_split_folio(): queue a large anonymous folio (order 2 and up, not in the
    swap cache: reclaim swapping it out unmaps it page by page); the first time it is found
    partly mapped counts split_deferred of its size, and thp_deferred_split_page if it is
    PMD-sized (folio_test_pmd_mappable())."""
    order = mem.frames.order(head)
    if order <= 1 or head in mem.swap.entry_of:  # folio_test_swapcache(): reclaim has it
        return
    was = mem.thp.deferred.get(head)
    if partially_mapped and not was:
        if order >= HPAGE_PMD_ORDER:
            _count(mem, "thp_deferred_split_page")
        count_mthp_stat(mem, order, "split_deferred")
    mem.thp.deferred[head] = bool(was) or partially_mapped


def note_pte_unmapped(mem: Kernel, pfn: int) -> None:
    """__folio_remove_rmap() for a PTE of a large anonymous folio: still mapped elsewhere
    but no longer whole, it goes on the deferred split queue as partly mapped."""
    frames = mem.frames
    head = frames.head(pfn)
    if (
        frames.mapcount(head)
        and frames.flags(head) & _ANON
        and frames.mapped_pages(head) < (1 << frames.order(head))
    ):
        deferred_split_folio(mem, head, partially_mapped=True)


def _remap_zero_pages(mem: Kernel, head: int) -> None:
    """remap_page() with RMP_USE_SHARED_ZEROPAGE (try_to_map_unused_to_zeropage()): a
    split anonymous folio's pages that hold only zeros are mapped by the shared zero page
    instead (special, read-only), except in VM_LOCKED VMAs; they are freed with the split."""
    frames = mem.frames
    if frames.flags(head) & _MLOCKED or not frames.flags(head) & _ANON:
        return
    zero = frames.zero_pfn
    for p in range(head, head + frames.folio_nr_pages(head)):
        if frames.has_data(p):
            continue
        for mm, va in list(mem.rmap.get(p, ())):
            vma = mm.tree.lookup(va)
            if vma is None or vma.flags & VM_LOCKED:
                continue
            mm.pt.set(va, (pfn_pte(zero, page_prot(vma)) & ~PAGE_RW) | PAGE_SPECIAL)
            mem.cpu.flush_range(mm, va, va + PAGE_SIZE)
            frames.unmap(p)
            rmap_remove(mem, p, mm, va)
            frames.put(p)


def split_folio(mem: Kernel, head: int) -> bool:
    """split_folio() to order 0 of a folio no PMD maps and nobody else holds (False,
    thp_split_page_failed, otherwise): every page becomes its own folio on the LRU list of
    the folio; pages holding only zeros are mapped by the shared zero page instead, and
    pages no PTE maps are freed."""
    frames = mem.frames
    order = frames.order(head)
    if frames.entire_mapcount(head) or frames.refcount(head) != frames.mapcount(head):
        if order == HPAGE_PMD_ORDER:
            _count(mem, "thp_split_page_failed")
        count_mthp_stat(mem, order, "split_failed")
        return False
    mem.thp.deferred.pop(head, None)
    frames.get(head)  # the splitter's reference, dropped by frames.split()
    _remap_zero_pages(mem, head)
    lru = mem.node.lru
    on_lru = head in lru.where
    lru.remove(head)
    pages = frames.split(head)
    split_mlock_counts(mem, head, pages)
    if on_lru:
        for p in pages:
            lru.add(p)
    if order == HPAGE_PMD_ORDER:  # __folio_split(): THP_SPLIT_PAGE for PMD-sized folios
        _count(mem, "thp_split_page")
    count_mthp_stat(mem, order, "split")
    return True


def split_folio_everywhere(mem: Kernel, head: int) -> bool:
    """split_folio(): unmap_folio() splits every PMD mapping the folio (straight to
    migration entries: no partial mapping is seen) and takes its PTEs down one at a time
    (try_to_migrate_one()): a folio only PTEs map, on two pages or more, is seen partly
    mapped on the way, queued and counted as a deferred split (unless it was already); then
    the folio itself is split."""
    frames = mem.frames
    if (
        not frames.entire_mapcount(head)
        and not mem.thp.deferred.get(head)
        and frames.mapped_pages(head) >= 2
        and frames.refcount(head) == frames.mapcount(head)
    ):
        deferred_split_folio(mem, head, partially_mapped=True)
    for mm, va in list(mem.rmap.get(head, ())):
        if _is_huge(pmd_entry(mm, va)) and not va & (PMD_SIZE - 1):
            split_huge_pmd(mm, None, va)
    return split_folio(mem, head)


def _shared(mem: Kernel, head: int, mm: AddressSpace) -> bool:
    """folio_maybe_mapped_shared(): another mm maps some page of the folio."""
    frames = mem.frames
    for p in range(head, head + frames.folio_nr_pages(head)):
        for owner, _va in mem.rmap.get(p, ()):
            if owner is not mm:
                return True
    return False


def madvise_thp(mm: AddressSpace, start: int, end: int, op: str) -> list[int]:
    """The THP part of MADV_FREE / COLD / PAGEOUT over ``[start, end)`` (op "free", "cold"
    or "pageout"), before the PTE walk. A PMD-mapped THP only this mm maps is handled whole
    when the range covers it (madvise_free_huge_pmd(): clean, old, lazily freed; COLD: old,
    unreferenced, deactivated; PAGEOUT: handed to reclaim, whose folios are returned) and
    split otherwise (split_folio(), PMD and folio); a PTE-mapped large folio is handled
    whole when the range maps all of it and split otherwise (``_madvise_pte_mapped``).
    Folios other mms map are left alone."""
    mem = mm.mem
    frames = mem.frames
    picked: list[int] = []
    for haddr in pmd_leaves(mm, start, end):
        e = pmd_entry(mm, haddr)
        head = pfn_of(e, PMD_LEVEL)
        if not _is_huge(e) or head == mem.thp.huge_zero_pfn or _shared(mem, head, mm):
            continue
        if haddr < start or haddr + PMD_SIZE > end:
            split_folio_everywhere(mem, head)
            continue
        if op == "free":
            frames.clear_flags(head, _DIRTY)
            if e & (PAGE_ACCESSED | PAGE_DIRTY):
                mm.pt.set(haddr, e & ~(PAGE_ACCESSED | PAGE_DIRTY), PMD_LEVEL)
                mem.cpu.flush_range(mm, haddr, haddr + PMD_SIZE)
            flags = frames.flags(head)
            if flags & _SWAPBACKED and not flags & _MLOCKED:  # folio_mark_lazyfree()
                frames.clear_flags(head, _SWAPBACKED | _REFERENCED | _ACTIVE)
                mem.node.lru.update(head)
            continue
        if op == "cold" and e & PAGE_ACCESSED:
            mm.pt.set(haddr, e & ~PAGE_ACCESSED, PMD_LEVEL)
            mem.cpu.flush_range(mm, haddr, haddr + PMD_SIZE)
        frames.clear_flags(head, _REFERENCED)
        if op == "pageout":
            picked.append(head)
        else:
            _deactivate(mem, head)
    if mm.pt_used:
        _madvise_pte_mapped(mm, start, end, op, picked)
    return picked


def _madvise_pte_mapped(mm: AddressSpace, start: int, end: int, op: str, picked: list[int]) -> None:
    """The large-folio branch of madvise_free_pte_range() / madvise_cold_or_pageout_pte_range()
    for PTE-mapped folios: where one run of PTEs in the range maps a whole folio in order
    (madvise_folio_pte_batch() from the first PTE met), the folio is handled whole; else it
    is split (split_folio()) unless another mm maps it (folio_maybe_mapped_shared()), and
    its pages are left to the PTE walk that follows."""
    mem = mm.mem
    frames = mem.frames
    seen: set[int] = set()
    whole: list[tuple[int, int]] = []
    for m in list(mm.pt.iter_present(start, end)):
        if m.level != 1:
            continue
        leaf = mm.pt.get(m.vaddr)  # a split before may have remapped or freed it
        if leaf is None or leaf.level != 1 or not leaf.entry & _PRESENT:
            continue
        pfn = pfn_of(leaf.entry, 1)
        if pfn == frames.zero_pfn or not frames.flags(pfn) & _HEAD:
            continue
        head = frames.head(pfn)
        if head in seen:
            continue
        seen.add(head)
        nr = frames.folio_nr_pages(head)
        seg_end = min(end, (m.vaddr & _PMD_MASK) + PMD_SIZE)
        if pfn == head and _pte_run(mm, m.vaddr, head, seg_end) == nr:
            whole.append((m.vaddr, head))
        elif not _shared(mem, head, mm):
            split_folio_everywhere(mem, head)
    for addr, head in whole:
        if frames.is_allocated(head) and frames.order(head):
            _madvise_whole_folio(mm, addr, head, op, picked)


def _pte_run(mm: AddressSpace, addr: int, head: int, end: int) -> int:
    """folio_pte_batch(): how many PTEs from ``addr`` (before ``end``) map the folio's pages
    head, head + 1, ... in order."""
    n = 1
    nr = mm.mem.frames.folio_nr_pages(head)
    while n < nr and addr + n * PAGE_SIZE < end:
        leaf = mm.pt.get(addr + n * PAGE_SIZE)
        if leaf is None or leaf.level != 1 or not leaf.entry & _PRESENT:
            break
        if pfn_of(leaf.entry, 1) != head + n:
            break
        n += 1
    return n


def _madvise_whole_folio(
    mm: AddressSpace, addr: int, head: int, op: str, picked: list[int]
) -> None:
    """A large folio whose PTEs at ``addr`` map all of it, as the PTE walks treat a folio:
    FREE: a dirty one mapped elsewhere too is left (folio_mapcount() != nr pages), else it
    is cleaned, its PTEs made clean and old and the folio lazily freed
    (folio_mark_lazyfree()); COLD / PAGEOUT: only a folio on the LRU and mapped just here;
    COLD ages the PTEs and deactivates it, both drop PG_referenced, PAGEOUT hands it to
    reclaim."""
    mem = mm.mem
    frames = mem.frames
    nr = frames.folio_nr_pages(head)
    end = addr + nr * PAGE_SIZE
    flags = frames.flags(head)
    if op == "free":
        if flags & _DIRTY:
            if frames.mapcount(head) != nr:
                return
            frames.clear_flags(head, _DIRTY)
        _clear_pte_bits(mm, addr, end, PAGE_ACCESSED | PAGE_DIRTY)
        if flags & _SWAPBACKED and not flags & _MLOCKED:
            frames.clear_flags(head, _SWAPBACKED | _REFERENCED | _ACTIVE)
            mem.node.lru.update(head)
        return
    if head not in mem.node.lru.where or frames.mapcount(head) != nr:
        return
    if op == "cold":
        _clear_pte_bits(mm, addr, end, PAGE_ACCESSED)
    frames.clear_flags(head, _REFERENCED)
    if op == "pageout":
        picked.append(head)
    else:
        _deactivate(mem, head)


def _clear_pte_bits(mm: AddressSpace, start: int, end: int, bits: int) -> None:
    """clear_young_dirty_ptes() over ``[start, end)``, then one TLB flush."""
    changed = False
    for a in range(start, end, PAGE_SIZE):
        leaf = mm.pt.get(a)
        if leaf is not None and leaf.entry & bits:
            mm.pt.set(a, leaf.entry & ~bits)
            changed = True
    if changed:
        mm.mem.cpu.flush_range(mm, start, end)


def _deactivate(mem: Kernel, head: int) -> None:
    """folio_deactivate() -> lru_deactivate(): an active evictable folio goes to the
    inactive list; pgdeactivate counts its pages."""
    frames = mem.frames
    flags = frames.flags(head)
    if flags & _ACTIVE and not flags & _MLOCKED:
        frames.clear_flags(head, _ACTIVE | _REFERENCED)
        mem.node.lru.update(head)
        _count(mem, "pgdeactivate", frames.folio_nr_pages(head))


def deferred_split_scan(mem: Kernel, nr_to_scan: int | None = None) -> int:
    """deferred_split_scan(): the shrinker splits the partly mapped folios of the queue
    (a wholly mapped one would be split only when underused, which max_ptes_none = 511
    rules out); returns how many were split."""
    split = 0
    for head, partial in list(mem.thp.deferred.items())[:nr_to_scan]:
        if partial and split_folio(mem, head):
            split += 1
    return split


# ---------------------------------------------------------------------------- fork
def copy_huge_pmd(dst: AddressSpace, src: AddressSpace, vma: Vma, haddr: int, e: int) -> None:
    """copy_huge_pmd(): the child maps the same THP (or huge zero page) by a PMD, old and
    write-protected; the parent's PMD is write-protected too (the caller flushes)."""
    mem = src.mem
    head = pfn_of(e, PMD_LEVEL)
    _deposit(dst, haddr)
    if head != mem.thp.huge_zero_pfn:
        mem.frames.get(head)
        mem.frames.map_pmd(head)
        rmap_add(mem, head, dst, haddr)
    if is_cow_mapping(vma.flags) and e & PAGE_RW:
        e &= ~PAGE_RW
        src.pt.set(haddr, e, PMD_LEVEL)
    dst.pt.prealloc(haddr, PMD_LEVEL)
    dst.pt.set(haddr, e & ~(PAGE_RW | PAGE_ACCESSED), PMD_LEVEL)


# ------------------------------------------------------------------------ mprotect
def change_huge_pmd(mm: AddressSpace, vma: Vma, haddr: int, e: int) -> tuple[int, bool]:
    """change_huge_pmd(): the VMA's new protection on a whole PMD leaf; write stays only
    on a THP nobody else holds (as change_pte_range() for PTEs). Returns (new entry,
    narrowed)."""
    head = pfn_of(e, PMD_LEVEL)
    prot = page_prot(vma) | PAGE_PSE
    keep = PAGE_ACCESSED | PAGE_DIRTY | PAGE_SPECIAL
    new = (pfn_pte(head, prot) & ~(keep | PAGE_RW)) | (e & keep)
    if (
        vma.flags & VM_WRITE
        and head != mm.mem.thp.huge_zero_pfn
        and prot & PAGE_RW
        and _folio_exclusive(mm, head)
    ):
        new |= PAGE_RW
    else:
        new &= ~PAGE_RW
    narrowed = bool((e & PAGE_PRESENT and not new & PAGE_PRESENT) or (e & ~new & PAGE_RW))
    narrowed |= bool(new & (1 << 63) and not e & (1 << 63))
    if new != e:
        mm.pt.set(haddr, new, PMD_LEVEL)
    return new, narrowed
