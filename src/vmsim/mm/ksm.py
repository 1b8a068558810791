"""Kernel samepage merging as Linux 6.18 runs it (mm/ksm.c): ksmd, rmap_items, the stable
and unstable trees, smart scan, per-process KSM, and every counter of /sys/kernel/mm/ksm.

One module, as mm/ksm.c is one file: the scan, the trees and the counters share state and
lifecycles (a counter drops only when the scan revisits an item), so splitting them would
spread one state machine over several files.

Address spaces join the scan list (``ksm_mm_head``) with MADV_MERGEABLE or
prctl(PR_SET_MEMORY_MERGE) (__ksm_enter()). ``scan()`` is one ksmd wake-up (ksm_do_scan()):
up to ``pages_to_scan`` pages, each found by scan_get_next_rmap_item() and handed to
cmp_and_merge_page(). A wake-up ends early when a full scan completes (the scanner returns
no rmap_item), so the counters between two wake-ups may be read "between passes".

Per scanned page there is an rmap_item (mm, address, oldchecksum, age, remaining_skips),
kept in the mm's address-ordered rmap_list. An rmap_item is in one of three states:

* on a stable node (STABLE_FLAG): the page is merged; the first rmap_item on a node counts
  in ``pages_shared``, each further one in ``pages_sharing``;
* in the unstable tree (UNSTABLE_FLAG, with the low bits of the pass number):
  ``pages_unshared``;
* neither: ``pages_volatile`` (= rmap_items - shared - sharing - unshared).

The lifecycles follow the source: the unstable tree's root is reset at the start of each
pass, but ``pages_unshared`` only drops when the rmap_item is visited again
(remove_rmap_item_from_tree()); a merged mapping that is written to (COW) or unmerged stays
counted in ``pages_sharing`` until ksmd visits its rmap_item again; a KSM page freed while
rmap_items point at it (a stale stable node) keeps its counts until ksm_get_folio() finds it
stale. rmap_items of addresses that no longer hold an anonymous page are freed when the
scan passes them (get_next_rmap_item(), remove_trailing_rmap_items()).

Smart scan (on by default, should_skip_rmap_item()): a page that is not a KSM page is
skipped, after its third visit, for 1, 2, 4 or 8 passes (skip_age() of its age), counted
in ``pages_skipped`` and taken out of the trees.

The stable tree keeps one entry per contents. A KSM page holds at most ``max_page_sharing``
(256) rmap_items; when it is full the next pair of identical pages makes a second KSM page,
and the entry becomes a stable-node chain of dups (``stable_node_chains``,
``stable_node_dups``).

Where the model is simpler than the kernel (said again in the report and the tests):

* trees are dicts keyed by contents, not rbtrees ordered by memcmp(): a walk that would
  pass over a stale node of *other* contents (and prune it) is not modelled; a stale node is
  pruned when one of its rmap_items is visited or its own contents are searched for;
* a chain's dup is chosen as stable_node_dup() does when it prunes (the fullest candidate),
  without the 2 s ``stable_node_chains_prune_millisecs`` clock;
* the checksum is CRC-32, not xxhash (only its changes matter);
* break_ksm() / break_cow() fault with FAULT_FLAG_UNSHARE in the kernel (the copy is
  mapped read-only and exclusive); the model faults as for a write (the copy is mapped
  writable): the same frames and cow_ksm count, one minor fault less on a later write;
* transparent huge pages are not scanned (the kernel splits them in
  try_to_merge_one_page()); the scan-time advisor runs on the model's clock
  (``sleep_millisecs`` per wake-up) with ksmd's CPU time given by
  ``advisor_cpu_ms_per_page``.
"""

from __future__ import annotations

import errno
import os
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vmsim.hw.pte import PAGE_ACCESSED, PAGE_DIRTY, PAGE_RW, PAGE_SPECIAL, pfn_pte
from vmsim.mm.flags import (
    VM_DROPPABLE,
    VM_HUGETLB,
    VM_LOCKED,
    VM_MAYSHARE,
    VM_MERGEABLE,
    VM_SHARED,
    VM_SPECIAL,
)
from vmsim.mm.internal import entry_pfn, page_prot, present
from vmsim.mm.memory import handle_mm_fault
from vmsim.mm.mlock import mlock_folio, munlock_folio
from vmsim.mm.rmap import rmap_add, rmap_remove
from vmsim.mm.swap_state import free_swap_cache
from vmsim.phys.frames import PageFlag

if TYPE_CHECKING:
    from vmsim.mm.core import AddressSpace
    from vmsim.mm.kernel import Kernel
    from vmsim.mm.vma import Vma

PAGE_SIZE = 4096
ZERO = bytes(PAGE_SIZE)
_ANON = int(PageFlag.ANON)
_KSM = int(PageFlag.KSM)
_HEAD = int(PageFlag.HEAD)
_MLOCKED = int(PageFlag.MLOCKED)

#: sizeof(struct ksm_rmap_item) on x86-64: general_profit and ksm_process_profit charge it
RMAP_ITEM_SIZE = 64
DEFAULT_PAGES_TO_SCAN = 100  # DEFAULT_PAGES_TO_SCAN
DEFAULT_MAX_PAGE_SHARING = 256  # ksm_max_page_sharing
SEQNR_MASK = 0xFF  # low bits of the unstable tree's seqnr kept in rmap_item->address
U8_MAX = 255  # rmap_age_t is a u8
KSM_ADVISOR_MIN_CPU = 10
EWMA_WEIGHT = 30

_NONE, _UNSTABLE, _STABLE = 0, 1, 2
# vma_ksm_compatible(): VMAs KSM leaves alone
KSM_INCOMPATIBLE = VM_SHARED | VM_MAYSHARE | VM_SPECIAL | VM_HUGETLB | VM_DROPPABLE


def checksum(data: bytes) -> int:
    """calc_checksum(): a 32-bit hash of the page (the kernel uses xxhash)."""
    return zlib.crc32(data)


ZERO_CHECKSUM = checksum(ZERO)  # zero_checksum, computed at ksm_init()


def skip_age(age: int) -> int:
    """skip_age(): how many passes a page of this age is skipped."""
    if age <= 3:
        return 1
    if age <= 5:
        return 2
    if age <= 8:
        return 4
    return 8


def vma_ksm_compatible(flags: int) -> bool:
    """vma_ksm_compatible(): shared, special, hugetlb and droppable VMAs are ignored."""
    return not flags & KSM_INCOMPATIBLE


class RmapItem:
    """struct ksm_rmap_item: one scanned virtual page of one mm."""

    __slots__ = (
        "address",
        "age",
        "head",
        "key",
        "mm",
        "oldchecksum",
        "remaining_skips",
        "seqnr",
        "state",
    )

    def __init__(self, mm: AddressSpace, address: int) -> None:
        self.mm = mm
        self.address = address
        self.oldchecksum = 0  # kmem_cache_zalloc(): zero until the first checksum
        self.age = 0
        self.remaining_skips = 0
        self.state = _NONE
        self.seqnr = 0  # pass that inserted it in the unstable tree (when _UNSTABLE)
        self.head: StableNode | None = None  # its stable node (when _STABLE)
        self.key = b""  # the contents it was filed under in the unstable tree


class StableNode:
    """struct ksm_stable_node (a regular node or a chain's dup): one KSM page and the
    rmap_items that map it (``hlist``; its length is rmap_hlist_len)."""

    __slots__ = ("data", "hlist", "kpfn", "stale")

    def __init__(self, kpfn: int, data: bytes) -> None:
        self.kpfn = kpfn
        self.data = data
        self.hlist: list[RmapItem] = []
        self.stale = False  # the folio was freed: ksm_get_folio() will find it stale


class StableEntry:
    """The stable tree's node for one contents: a regular node (``chain`` False, one dup)
    or a stable_node chain of dups."""

    __slots__ = ("chain", "dups")

    def __init__(self, node: StableNode) -> None:
        self.chain = False
        self.dups: list[StableNode] = [node]


@dataclass
class KsmMm:
    """What struct mm_struct holds for KSM: the MMF_VM_MERGEABLE / MMF_VM_MERGE_ANY bits
    and the counters /proc/PID/ksm_stat shows."""

    mergeable: bool = False  # MMF_VM_MERGEABLE: the mm has an mm_slot
    merge_any: bool = False  # MMF_VM_MERGE_ANY: prctl(PR_SET_MEMORY_MERGE, 1)
    rmap_items: int = 0  # mm->ksm_rmap_items
    merging_pages: int = 0  # mm->ksm_merging_pages
    zero_pages: int = 0  # mm->ksm_zero_pages


class MmSlot:
    """struct ksm_mm_slot: an mm on the scan list and its address-ordered rmap_list."""

    __slots__ = ("items", "mm")

    def __init__(self, mm: AddressSpace) -> None:
        self.mm = mm
        self.items: list[RmapItem] = []


class Ksm:
    """ksmd, its trees and its counters (/sys/kernel/mm/ksm)."""

    def __init__(
        self,
        mem: Kernel,
        pages_to_scan: int = DEFAULT_PAGES_TO_SCAN,
        use_zero_pages: bool = False,
        run: int = 1,
    ):
        self.mem = mem
        # the sysfs knobs, with their 6.18 defaults
        self.run = run  # ksm_run: 0 stop, 1 merge (ksmd scans), 2 unmerge
        self.pages_to_scan = pages_to_scan  # ksm_thread_pages_to_scan
        self.sleep_millisecs = 20
        self.use_zero_pages = use_zero_pages
        self.smart_scan = True
        self.max_page_sharing = DEFAULT_MAX_PAGE_SHARING
        self.merge_across_nodes = 1
        self.stable_node_chains_prune_millisecs = 2000
        self.advisor_mode = "none"  # or "scan-time"
        self.advisor_max_cpu = 70
        self.advisor_min_pages_to_scan = 500
        self.advisor_max_pages_to_scan = 30000
        self.advisor_target_scan_time = 200
        #: the advisor's view of ksmd's CPU time per scanned page (ms); not a kernel knob
        self.advisor_cpu_ms_per_page = 0.0
        # the scan list and cursor (ksm_mm_head, ksm_scan)
        self.slots: list[MmSlot] = []
        self.cursor: int | None = None  # index of ksm_scan.mm_slot; None = ksm_mm_head
        self.address = 0  # ksm_scan.address
        self.rmap_pos = 0  # ksm_scan.rmap_list, as an index into the slot's items
        self.seqnr = 0  # ksm_scan.seqnr = full_scans
        # the trees
        self.stable: dict[bytes, StableEntry] = {}
        self.node_of: dict[int, StableNode] = {}  # folio_stable_node(): KSM pfn -> node
        self.unstable: dict[bytes, RmapItem] = {}
        # the counters
        self.pages_scanned = 0
        self.pages_shared = 0
        self.pages_sharing = 0
        self.pages_unshared = 0
        self.rmap_items = 0
        self.pages_skipped = 0
        self.ksm_zero_pages = 0
        self.per_mm: dict[int, KsmMm] = {}
        # the scan-time advisor (struct advisor_ctx) on the model's clock
        self.clock_ms = 0
        self._adv_start_ms = 0
        self._adv_scan_time = 0
        self._adv_change = 0
        self._adv_cpu_ms = 0.0
        self._cpu_ms = 0.0

    # ------------------------------------------------------------------ per mm
    def mm_state(self, mm: AddressSpace) -> KsmMm:
        st = self.per_mm.get(mm.serial)
        if st is None:
            st = self.per_mm[mm.serial] = KsmMm()
        return st

    def _slot_index(self, mm: AddressSpace) -> int | None:
        for i, s in enumerate(self.slots):
            if s.mm is mm:
                return i
        return None

    @property
    def mms(self) -> list[AddressSpace]:
        """The address spaces on the scan list, in scan order."""
        return [s.mm for s in self.slots]

    def register(self, mm: AddressSpace) -> None:
        """__ksm_enter(): give ``mm`` an mm_slot, just behind the scan cursor (so a forked
        mm is scanned after the others have settled), and set MMF_VM_MERGEABLE."""
        st = self.mm_state(mm)
        if st.mergeable:
            return
        slot = MmSlot(mm)
        if self.cursor is None or self.run & 2:
            self.slots.append(slot)  # list_add_tail() on ksm_mm_head
        else:
            self.slots.insert(self.cursor, slot)  # list_add_tail() on the cursor's slot
            self.cursor += 1
        st.mergeable = True

    def vma_flags(self, mm: AddressSpace, file: object, flags: int) -> int:
        """ksm_vma_flags(): a new VMA of a MMF_VM_MERGE_ANY mm is born VM_MERGEABLE (and the
        mm rejoins the scan list if ksmd had dropped it)."""
        st = self.per_mm.get(mm.serial)
        if st is not None and st.merge_any and vma_ksm_compatible(flags):
            flags |= VM_MERGEABLE
            if not st.mergeable:
                self.register(mm)
        return flags

    def madvise_mergeable(self, mm: AddressSpace, vma: Vma) -> bool:
        """ksm_madvise(MADV_MERGEABLE): True if the VMA takes VM_MERGEABLE."""
        if vma.flags & VM_MERGEABLE:
            return False
        if not vma_ksm_compatible(vma.flags):
            return False
        self.register(mm)
        return True

    def fork(self, child: AddressSpace, parent: AddressSpace) -> None:
        """ksm_fork(): the child joins the scan list if the parent is on it, and inherits
        MMF_VM_MERGE_ANY."""
        pst = self.per_mm.get(parent.serial)
        if pst is None:
            return
        if pst.mergeable:
            self.register(child)
        if pst.merge_any:
            self.mm_state(child).merge_any = True

    def execve(self, new: AddressSpace, old: AddressSpace) -> None:
        """ksm_execve(): MMF_VM_MERGE_ANY is in MMF_INIT_MASK, so the new mm keeps it and
        joins the scan list before its first VMA (the stack, not made mergeable) exists;
        its later mappings are born VM_MERGEABLE (ksm_vma_flags())."""
        ost = self.per_mm.get(old.serial)
        if ost is not None and ost.merge_any:
            self.mm_state(new).merge_any = True
            self.register(new)

    def exit_mm(self, mm: AddressSpace) -> None:
        """__ksm_exit(): an mm with no rmap_items, not under the cursor, leaves at once;
        otherwise its slot moves just after the cursor and ksmd frees it (and its
        rmap_items, with their counts) when it gets there."""
        st = self.per_mm.get(mm.serial)
        if st is None or not st.mergeable:
            return
        i = self._slot_index(mm)
        if i is None or i == self.cursor:
            return
        slot = self.slots.pop(i)
        if self.cursor is not None and i < self.cursor:
            self.cursor -= 1
        if not slot.items:
            st.mergeable = False
            st.merge_any = False
            return
        where = 0 if self.cursor is None else self.cursor + 1  # list_move() after the cursor
        self.slots.insert(where, slot)

    def enable_merge_any(self, mm: AddressSpace) -> None:
        """ksm_enable_merge_any(): join the scan list, set MMF_VM_MERGE_ANY, and mark every
        compatible VMA VM_MERGEABLE (in place: vm_flags_set(), no VMA merging)."""
        st = self.mm_state(mm)
        if st.merge_any:
            return
        if not st.mergeable:
            self.register(mm)
        st.merge_any = True
        for vma in mm.tree:
            if not vma.flags & VM_MERGEABLE and vma_ksm_compatible(vma.flags):
                vma.flags |= VM_MERGEABLE

    def disable_merge_any(self, mm: AddressSpace) -> None:
        """ksm_disable_merge_any(): every VM_MERGEABLE VMA (madvised ones too) is unmerged
        and loses the flag (__ksm_del_vma()), then MMF_VM_MERGE_ANY is cleared."""
        st = self.per_mm.get(mm.serial)
        if st is None or not st.merge_any:
            return
        for vma in list(mm.tree):
            if vma.flags & VM_MERGEABLE:
                if vma.anon_vma is not None:
                    self.unmerge(mm, vma.start, vma.end)
                vma.flags &= ~VM_MERGEABLE
        st.merge_any = False

    def forget(self, pfn: int) -> None:
        """A KSM folio was freed: its stable node is stale from now on (the kernel notices
        it lazily, in ksm_get_folio())."""
        node = self.node_of.pop(pfn, None)
        if node is not None:
            node.stale = True

    def unmap_zero(self, mm: AddressSpace, entry: int) -> None:
        """ksm_might_unmap_zero_page(): a zero-page PTE that KSM placed (dirty) goes."""
        if entry & PAGE_DIRTY:
            self.ksm_zero_pages -= 1
            self.mm_state(mm).zero_pages -= 1

    # ------------------------------------------------------------ the trees
    def _remove_node(self, node: StableNode) -> None:
        """remove_node_from_stable_tree(): every rmap_item leaves the node (the last in the
        hlist was the one counted as shared), then the node leaves its entry."""
        n = len(node.hlist)
        for i, item in enumerate(node.hlist):
            if i < n - 1:
                self.pages_sharing -= 1
            else:
                self.pages_shared -= 1
            self.mm_state(item.mm).merging_pages -= 1
            item.state = _NONE
            item.head = None
        node.hlist.clear()
        entry = self.stable.get(node.data)
        if entry is not None and node in entry.dups:
            entry.dups.remove(node)
            if not entry.chain and not entry.dups:
                del self.stable[node.data]
            # an emptied chain stays until stable_node_dup() finds no dup in it
        if self.node_of.get(node.kpfn) is node:
            del self.node_of[node.kpfn]

    def _remove_rmap_item_from_tree(self, item: RmapItem) -> None:
        """remove_rmap_item_from_tree()."""
        if item.state == _STABLE:
            node = item.head
            assert node is not None
            if node.stale:  # ksm_get_folio() finds it stale: the whole node goes
                self._remove_node(node)
                return
            node.hlist.remove(item)
            if node.hlist:
                self.pages_sharing -= 1
            else:
                self.pages_shared -= 1
            self.mm_state(item.mm).merging_pages -= 1
            item.head = None
            item.state = _NONE
        elif item.state == _UNSTABLE:
            # root_unstable_tree was reset at the start of the pass: only an rmap_item
            # inserted during this pass is still linked in it (rb_erase())
            age = (self.seqnr - item.seqnr) & SEQNR_MASK
            if age == 0 and self.unstable.get(item.key) is item:
                del self.unstable[item.key]
            self.pages_unshared -= 1
            item.state = _NONE

    def _free_rmap_item(self, item: RmapItem) -> None:
        """free_rmap_item()."""
        self.rmap_items -= 1
        self.mm_state(item.mm).rmap_items -= 1

    def _stable_entry(self, data: bytes) -> StableEntry | None:
        """The tree's entry for ``data``, its stale dups pruned (ksm_get_folio() on each,
        as chain_prune() does), an empty chain freed and a one-dup chain collapsed
        (stable_node_dup())."""
        entry = self.stable.get(data)
        if entry is None:
            return None
        for dup in [d for d in entry.dups if d.stale]:
            self._remove_node(dup)
        entry = self.stable.get(data)
        if entry is None:
            return None
        if entry.chain:
            if not entry.dups:
                del self.stable[data]  # free_stable_node_chain()
                return None
            if len(entry.dups) == 1:
                entry.chain = False  # the chain collapses into its only dup
        return entry

    def _is_candidate(self, node: StableNode, offset: int = 0) -> bool:
        """__is_page_sharing_candidate()."""
        n = len(node.hlist)
        return n > 0 and n + offset < self.max_page_sharing

    def _stable_tree_search(self, data: bytes) -> StableNode | None:
        """stable_tree_search() for a page that is not a KSM page: the dup to merge with,
        or None (no such contents, or every dup is full)."""
        entry = self._stable_entry(data)
        if entry is None:
            return None
        best: StableNode | None = None
        for dup in entry.dups:
            if self._is_candidate(dup) and (best is None or len(dup.hlist) > len(best.hlist)):
                best = dup
        return best

    def _stable_tree_insert(self, kpfn: int, data: bytes) -> StableNode:
        """stable_tree_insert(): a new node; if the contents are already in the tree (all
        their KSM pages full), the node becomes a dup of a (possibly new) chain."""
        node = StableNode(kpfn, data)
        entry = self._stable_entry(data)
        if entry is None:
            self.stable[data] = StableEntry(node)
        else:
            entry.chain = True  # alloc_stable_node_chain() if it was a regular node
            entry.dups.insert(0, node)  # stable_node_chain_add_dup(): hlist_add_head()
        self.node_of[kpfn] = node
        return node

    def _stable_tree_append(self, item: RmapItem, node: StableNode) -> None:
        """stable_tree_append(): the first rmap_item of a node is pages_shared, every
        other one pages_sharing."""
        node.hlist.insert(0, item)
        item.head = node
        item.state = _STABLE
        if len(node.hlist) > 1:
            self.pages_sharing += 1
        else:
            self.pages_shared += 1
        self.mm_state(item.mm).merging_pages += 1

    # ------------------------------------------------------------- the pages
    def _anon_page(self, mm: AddressSpace, va: int) -> int | None:
        """folio_walk_start() + folio_test_anon(): the anonymous page mapped at ``va`` (not
        the zero page: vm_normal_page() has none for it)."""
        leaf = mm.pt.get(va)
        if leaf is None or not present(leaf.entry) or leaf.level != 1:
            return None
        pfn = entry_pfn(leaf.entry)
        frames = self.mem.frames
        if pfn == frames.zero_pfn or not frames.is_allocated(pfn):
            return None
        flags = frames.flags(pfn)
        if not flags & _ANON or flags & _HEAD or frames.order(pfn):  # THPs are left alone
            return None
        return pfn

    def _mergeable_vma(self, mm: AddressSpace, va: int) -> Vma | None:
        """find_mergeable_vma()."""
        if not mm.alive:
            return None
        vma = mm.tree.lookup(va)
        if vma is None or not vma.flags & VM_MERGEABLE or vma.anon_vma is None:
            return None
        return vma

    def _get_mergeable_page(self, item: RmapItem) -> int | None:
        """get_mergeable_page()."""
        if self._mergeable_vma(item.mm, item.address) is None:
            return None
        return self._anon_page(item.mm, item.address)

    def _can_write_protect(self, pfn: int) -> bool:
        """write_protect_page()'s check that nobody else holds the page: a GUP pin (or a
        folio waiting in a per-CPU batch) raises the refcount over mapcount + swap cache."""
        frames = self.mem.frames
        swapped = 1 if pfn in self.mem.swap.entry_of else 0
        return frames.refcount(pfn) == frames.mapcount(pfn) + swapped

    def _write_protect(self, pfn: int) -> None:
        """write_protect_page() on every PTE of the page (one, or a forked family's)."""
        for omm, ova in list(self.mem.rmap.get(pfn, ())):
            leaf = omm.pt.get(ova)
            if leaf is not None and leaf.entry & PAGE_RW:
                omm.pt.set(ova, leaf.entry & ~PAGE_RW)
                self.mem.cpu.flush_range(omm, ova, ova + PAGE_SIZE)

    def _replace(self, mm: AddressSpace, va: int, old: int, new: int) -> None:
        """replace_page(): the PTE at ``va`` maps ``new`` read-only; ``old`` is released.
        The zero page is mapped special and dirty (is_ksm_zero_pte())."""
        frames = self.mem.frames
        vma = mm.tree.lookup(va)
        assert vma is not None
        entry = pfn_pte(new, page_prot(vma) & ~PAGE_RW) | PAGE_ACCESSED
        if new == frames.zero_pfn:
            entry |= PAGE_SPECIAL | PAGE_DIRTY
            self.ksm_zero_pages += 1  # ksm_map_zero_page()
            self.mm_state(mm).zero_pages += 1
        else:
            frames.get(new)
            frames.map(new)
            rmap_add(self.mem, new, mm, va)
            if vma.flags & VM_LOCKED:  # folio_add_anon_rmap_pte() -> mlock_vma_folio()
                mlock_folio(mm, new)
        mm.pt.set(va, entry)
        self.mem.cpu.flush_range(mm, va, va + PAGE_SIZE)
        frames.unmap(old)
        rmap_remove(self.mem, old, mm, va)
        if vma.flags & VM_LOCKED and frames.flags(old) & _MLOCKED:
            munlock_folio(mm, old)  # folio_remove_rmap_pte() -> munlock_vma_folio()
        free_swap_cache(self.mem, old)  # replace_page(): folio_free_swap() if unmapped
        frames.put(old)

    def _merge_with_ksm_page(self, item: RmapItem, pfn: int, kpfn: int) -> bool:
        """try_to_merge_with_ksm_page() (try_to_merge_one_page(), replace_page()); on
        success the rmap_item leaves its tree, ready for stable_tree_append()."""
        if self._mergeable_vma(item.mm, item.address) is None:
            return False
        if pfn != kpfn:  # page == kpage: a KSM page forked, nothing to replace
            frames = self.mem.frames
            if not self._can_write_protect(pfn) or frames.read(pfn) != frames.read(kpfn):
                return False
            self._replace(item.mm, item.address, pfn, kpfn)
        self._remove_rmap_item_from_tree(item)
        return True

    # ------------------------------------------------------ cmp_and_merge_page
    def _cmp_and_merge_page(self, pfn: int, item: RmapItem) -> None:
        """cmp_and_merge_page()."""
        frames = self.mem.frames
        node = self.node_of.get(pfn)
        if node is not None:
            if item.head is node:
                return  # already counted on this KSM page
            # a KSM page this rmap_item is not on yet (a KSM page forked): stable_tree_
            # search() returns the page itself and the merge is a no-op
            self._remove_rmap_item_from_tree(item)
            if self._merge_with_ksm_page(item, pfn, pfn):
                self._stable_tree_append(item, node)  # max_page_sharing_bypass
            return
        self._remove_rmap_item_from_tree(item)
        data = frames.read(pfn)
        csum = checksum(data)
        if item.oldchecksum != csum:
            item.oldchecksum = csum  # volatile: changed since the last visit
            return
        # try_to_merge_with_zero_page()
        if self.use_zero_pages and csum == ZERO_CHECKSUM:
            vma = self._mergeable_vma(item.mm, item.address)
            if vma is None:
                return
            if data == ZERO and self._can_write_protect(pfn):
                self._replace(item.mm, item.address, pfn, frames.zero_pfn)
                return
        dup = self._stable_tree_search(data)
        if dup is not None:
            if self._merge_with_ksm_page(item, pfn, dup.kpfn):
                self._stable_tree_append(item, dup)
            return
        # unstable_tree_search_insert()
        tree_item = self.unstable.get(data)
        if tree_item is not None:
            tree_pfn = self._get_mergeable_page(tree_item)
            if tree_pfn is None or tree_pfn == pfn:
                return  # a vanished tree page, or a forked page: neither merged nor added
            if frames.read(tree_pfn) == data:
                self._try_to_merge_two_pages(item, pfn, tree_item, tree_pfn, data)
                return
        item.state = _UNSTABLE
        item.seqnr = self.seqnr & SEQNR_MASK
        item.key = data
        self.unstable[data] = item
        self.pages_unshared += 1

    def _try_to_merge_two_pages(
        self, item: RmapItem, pfn: int, tree_item: RmapItem, tree_pfn: int, data: bytes
    ) -> None:
        """try_to_merge_two_pages(): the scanned page becomes the KSM page, the tree's page
        is replaced by it; then stable_tree_insert() and both rmap_items appended."""
        vma = self._mergeable_vma(item.mm, item.address)
        if vma is None or not self._can_write_protect(pfn):
            return
        frames = self.mem.frames
        # try_to_merge_with_ksm_page(rmap_item, page, NULL): the page turns KSM
        frames.set_flags(pfn, _KSM)
        self._write_protect(pfn)
        if (
            self._mergeable_vma(tree_item.mm, tree_item.address) is None
            or not self._can_write_protect(tree_pfn)
            or frames.read(tree_pfn) != data
        ):
            # the tree's page cannot be merged: "a ksm page with only one pte pointing to
            # it", so break_cow(): a private copy replaces it
            handle_mm_fault(item.mm, vma, item.address, True, remote=True)
            return
        self._replace(tree_item.mm, tree_item.address, tree_pfn, pfn)
        self._remove_rmap_item_from_tree(tree_item)
        node = self._stable_tree_insert(pfn, data)
        self._stable_tree_append(tree_item, node)
        self._stable_tree_append(item, node)

    # ---------------------------------------------------------------- the scan
    def _should_skip(self, pfn: int, item: RmapItem) -> bool:
        """should_skip_rmap_item()."""
        if not self.smart_scan:
            return False
        if self.mem.frames.flags(pfn) & _KSM:
            return False  # KSM pages are always looked at
        age = item.age
        if age != U8_MAX:
            item.age += 1
        if age < 3:
            return False
        if not item.remaining_skips:
            item.remaining_skips = skip_age(age)
            return False
        self.pages_skipped += 1
        item.remaining_skips -= 1
        self._remove_rmap_item_from_tree(item)
        return True

    def _get_next_rmap_item(self, slot: MmSlot, addr: int) -> RmapItem:
        """get_next_rmap_item(): rmap_items below ``addr`` are freed; the one at ``addr``
        is returned, or a new one is linked in."""
        items = slot.items
        pos = self.rmap_pos
        while pos < len(items):
            it = items[pos]
            if it.address == addr:
                self.rmap_pos = pos + 1
                return it
            if it.address > addr:
                break
            del items[pos]
            self._remove_rmap_item_from_tree(it)
            self._free_rmap_item(it)
        item = RmapItem(slot.mm, addr)
        self.rmap_items += 1
        self.mm_state(slot.mm).rmap_items += 1
        items.insert(pos, item)
        self.rmap_pos = pos + 1
        return item

    def _remove_trailing(self, slot: MmSlot) -> None:
        """remove_trailing_rmap_items()."""
        for it in slot.items[self.rmap_pos :]:
            self._remove_rmap_item_from_tree(it)
            self._free_rmap_item(it)
        del slot.items[self.rmap_pos :]

    def _scan_mm(self, slot: MmSlot) -> tuple[RmapItem, int] | None:
        """The part of scan_get_next_rmap_item() that walks one mm's VM_MERGEABLE VMAs from
        ksm_scan.address (holes jumped, as the 6.18 page walk does)."""
        mm = slot.mm
        if not mm.alive:
            return None
        tree = mm.tree
        vma = tree.find(self.address)  # vma_iter_init(&vmi, mm, ksm_scan.address)
        while vma is not None:
            if vma.flags & VM_MERGEABLE:
                if self.address < vma.start:
                    self.address = vma.start
                if vma.anon_vma is not None and mm.pt_used:
                    for m in mm.pt.iter_present(self.address, vma.end):
                        va = m.vaddr
                        pfn = self._anon_page(mm, va)
                        if pfn is None:
                            continue
                        item = self._get_next_rmap_item(slot, va)
                        self.address = va + PAGE_SIZE
                        if self._should_skip(pfn, item):
                            continue
                        return item, pfn
                self.address = vma.end
            vma = tree.next(vma)
        return None

    def _next_rmap_item(self) -> tuple[RmapItem, int] | None:
        """scan_get_next_rmap_item(): the next page to look at, or None at the end of a
        full scan (or with nothing to scan)."""
        if not self.slots:
            return None
        if self.cursor is None:
            self._advisor_start_scan()
            self.mem.lru_add_drain()  # lru_add_drain_all(): batched folios let go
            self.unstable = {}  # root_unstable_tree = RB_ROOT
            self.cursor = 0
            self.address = 0
            self.rmap_pos = 0
        while True:
            slot = self.slots[self.cursor]
            found = self._scan_mm(slot)
            if found is not None:
                return found
            if not slot.mm.alive:  # no_vmas
                self.address = 0
                self.rmap_pos = 0
            self._remove_trailing(slot)
            if self.address == 0:
                # no VM_MERGEABLE VMA at all: the mm leaves the list (MMF_VM_MERGEABLE
                # cleared; MMF_VM_MERGE_ANY kept since the 6.18 fix)
                del self.slots[self.cursor]
                self.mm_state(slot.mm).mergeable = False
            else:
                self.cursor += 1
            self.address = 0
            self.rmap_pos = 0
            if self.cursor >= len(self.slots):
                self.cursor = None
                self._advisor_stop_scan()
                self.seqnr += 1
                return None

    def scan(self) -> None:
        """One ksmd wake-up (ksm_scan_thread() -> ksm_do_scan()), if ``run`` is 1."""
        self.clock_ms += self.sleep_millisecs
        if not self.run & 1 or not self.slots:
            return
        todo = self.pages_to_scan
        while todo > 0:
            todo -= 1
            found = self._next_rmap_item()
            if found is None:
                return
            item, pfn = found
            self._cmp_and_merge_page(pfn, item)
            self.pages_scanned += 1
            self._cpu_ms += self.advisor_cpu_ms_per_page

    def scan_pass(self) -> int:
        """Wake ksmd until the current full scan completes; the number of wake-ups."""
        if not self.run & 1 or not self.slots:
            return 0
        target = self.seqnr + 1
        n = 0
        while self.seqnr < target and self.slots:
            self.scan()
            n += 1
        return n

    # ------------------------------------------------------- the advisor
    def _advisor_start_scan(self) -> None:
        if self.advisor_mode == "scan-time":
            self._adv_start_ms = self.clock_ms

    def _advisor_stop_scan(self) -> None:
        """scan_time_advisor(), on the model's clock."""
        if self.advisor_mode != "scan-time":
            return
        scan_time = (self.clock_ms - self._adv_start_ms) // 1000 or 1
        cpu_diff_ms = int(self._cpu_ms - self._adv_cpu_ms)
        cpu_percent = (cpu_diff_ms * 100) // (scan_time * 1000) or 1
        last = self._adv_scan_time or scan_time
        factor = self.advisor_target_scan_time * 100 // scan_time or 1
        change = scan_time * 100 // last or 1
        change = ((100 - EWMA_WEIGHT) * self._adv_change + EWMA_WEIGHT * change) // 100
        pages = self.pages_to_scan * 100 // factor
        pages = pages * change // 100
        per_page_cost = self.pages_to_scan // cpu_percent or 1
        pages = min(pages, per_page_cost * self.advisor_max_cpu)
        pages = max(pages, per_page_cost * KSM_ADVISOR_MIN_CPU)
        pages = min(pages, self.advisor_max_pages_to_scan)
        self._adv_change = change
        self._adv_scan_time = scan_time
        self._adv_cpu_ms = self._cpu_ms
        self.pages_to_scan = pages

    # ------------------------------------------------------------ sysfs knobs
    def set_knob(self, name: str, value: int | str) -> None:
        """A write to /sys/kernel/mm/ksm/<name> (the *_store() functions): EINVAL for a
        value the kernel refuses, EBUSY where it refuses while KSM pages exist."""
        einval = OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        if name == "advisor_mode":
            if value not in ("none", "scan-time"):
                raise einval
            if value != self.advisor_mode:
                self.advisor_mode = str(value)
                # set_advisor_defaults()
                if value == "none":
                    self.pages_to_scan = DEFAULT_PAGES_TO_SCAN
                else:
                    self._adv_scan_time = self._adv_change = 0
                    self._adv_cpu_ms = self._cpu_ms
                    self.pages_to_scan = self.advisor_min_pages_to_scan
            return
        if not isinstance(value, int) or value < 0:
            raise einval
        if name == "pages_to_scan":
            if self.advisor_mode != "none":
                raise einval
            self.pages_to_scan = value
        elif name == "run":
            if value > 2:
                raise einval
            if value != self.run:
                self.run = value
                if value & 2:
                    self._unmerge_all()
        elif name == "merge_across_nodes":
            if value > 1:
                raise einval
            if value != self.merge_across_nodes:
                if self.pages_shared:
                    raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
                self.merge_across_nodes = value
        elif name in ("use_zero_pages", "smart_scan"):
            setattr(self, name, bool(value))
        elif name == "max_page_sharing":
            if value < 2:
                raise einval
            if value != self.max_page_sharing:
                if self.pages_shared:
                    raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
                self.max_page_sharing = value
        elif name == "advisor_target_scan_time":
            if value < 1:
                raise einval
            self.advisor_target_scan_time = value
        elif name in (
            "sleep_millisecs",
            "stable_node_chains_prune_millisecs",
            "advisor_max_cpu",
            "advisor_min_pages_to_scan",
            "advisor_max_pages_to_scan",
        ):
            setattr(self, name, value)
        elif name in self.stats():
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))  # a read-only file
        else:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))

    def _unmerge_all(self) -> None:
        """unmerge_and_remove_all_rmap_items() (run = 2): every KSM page of every mm is
        broken, every rmap_item freed; mms that exited leave the list."""
        for slot in list(self.slots):
            mm = slot.mm
            if mm.alive:
                for vma in list(mm.tree):
                    if vma.flags & VM_MERGEABLE and vma.anon_vma is not None:
                        self.unmerge(mm, vma.start, vma.end)
            for it in slot.items:
                self._remove_rmap_item_from_tree(it)
                self._free_rmap_item(it)
            slot.items = []
            if not mm.alive:
                self.slots.remove(slot)
                st = self.mm_state(mm)
                st.mergeable = st.merge_any = False
        for entry in list(self.stable.values()):
            for dup in list(entry.dups):
                self._remove_node(dup)
        self.stable.clear()
        self.cursor = None
        self.seqnr = 0

    # ------------------------------------------------------------- unmerging
    def unmerge(self, mm: AddressSpace, start: int, end: int) -> None:
        """unmerge_ksm_pages() -> break_ksm(): every KSM page (or KSM-placed zero page)
        mapped in the range is replaced by a private copy (an unsharing fault). The
        rmap_items stay: ksmd updates the counters when it next passes."""
        if not mm.pt_used or start >= end:
            return
        frames = self.mem.frames
        for m in list(mm.pt.iter_present(start, end)):
            pfn = entry_pfn(m.entry)
            if pfn == frames.zero_pfn:
                if not m.entry & PAGE_DIRTY:
                    continue
            elif not frames.flags(pfn) & _KSM:
                continue
            vma = mm.tree.lookup(m.vaddr)
            assert vma is not None
            handle_mm_fault(mm, vma, m.vaddr, True, remote=True)

    # ------------------------------------------------------------ the numbers
    def volatile(self) -> int:
        """pages_volatile_show(): rmap_items in neither tree (never below 0)."""
        v = self.rmap_items - self.pages_shared - self.pages_sharing - self.pages_unshared
        return max(v, 0)

    def general_profit(self) -> int:
        """general_profit_show()."""
        return (
            self.pages_sharing + self.ksm_zero_pages
        ) * PAGE_SIZE - self.rmap_items * RMAP_ITEM_SIZE

    def stats(self) -> dict[str, int]:
        """Every file of /sys/kernel/mm/ksm as a number (advisor_mode: 0 none, 1
        scan-time; its text is :meth:`sysfs_text`)."""
        chains = sum(1 for e in self.stable.values() if e.chain)
        dups = sum(len(e.dups) for e in self.stable.values() if e.chain)
        return {
            "advisor_max_cpu": self.advisor_max_cpu,
            "advisor_max_pages_to_scan": self.advisor_max_pages_to_scan,
            "advisor_min_pages_to_scan": self.advisor_min_pages_to_scan,
            "advisor_mode": int(self.advisor_mode == "scan-time"),
            "advisor_target_scan_time": self.advisor_target_scan_time,
            "full_scans": self.seqnr,
            "general_profit": self.general_profit(),
            "ksm_zero_pages": self.ksm_zero_pages,
            "max_page_sharing": self.max_page_sharing,
            "merge_across_nodes": self.merge_across_nodes,
            "pages_scanned": self.pages_scanned,
            "pages_shared": self.pages_shared,
            "pages_sharing": self.pages_sharing,
            "pages_skipped": self.pages_skipped,
            "pages_to_scan": self.pages_to_scan,
            "pages_unshared": self.pages_unshared,
            "pages_volatile": self.volatile(),
            "run": self.run,
            "sleep_millisecs": self.sleep_millisecs,
            "smart_scan": int(self.smart_scan),
            "stable_node_chains": chains,
            "stable_node_chains_prune_millisecs": self.stable_node_chains_prune_millisecs,
            "stable_node_dups": dups,
            "use_zero_pages": int(self.use_zero_pages),
        }

    def sysfs_text(self, name: str) -> str:
        """The text of /sys/kernel/mm/ksm/<name>."""
        if name == "advisor_mode":
            return (
                "none [scan-time]\n" if self.advisor_mode == "scan-time" else "[none] scan-time\n"
            )
        return f"{self.stats()[name]}\n"

    def process_mergeable(self, mm: AddressSpace) -> bool:
        """ksm_process_mergeable(): some VMA is VM_MERGEABLE."""
        return any(v.flags & VM_MERGEABLE for v in mm.tree)

    def process_profit(self, mm: AddressSpace) -> int:
        """ksm_process_profit()."""
        st = self.mm_state(mm)
        return (st.merging_pages + st.zero_pages) * PAGE_SIZE - st.rmap_items * RMAP_ITEM_SIZE

    def ksm_stat(self, mm: AddressSpace) -> str:
        """proc_pid_ksm_stat(): /proc/PID/ksm_stat."""
        st = self.mm_state(mm)
        yes = {True: "yes", False: "no"}
        return (
            f"ksm_rmap_items {st.rmap_items}\n"
            f"ksm_zero_pages {st.zero_pages}\n"
            f"ksm_merging_pages {st.merging_pages}\n"
            f"ksm_process_profit {self.process_profit(mm)}\n"
            f"ksm_merge_any: {yes[st.merge_any]}\n"
            f"ksm_mergeable: {yes[self.process_mergeable(mm)]}\n"
        )

    def merging_pages_text(self, mm: AddressSpace) -> str:
        """proc_pid_ksm_merging_pages(): /proc/PID/ksm_merging_pages."""
        return f"{self.mm_state(mm).merging_pages}\n"


__all__ = [
    "DEFAULT_MAX_PAGE_SHARING",
    "DEFAULT_PAGES_TO_SCAN",
    "KSM_INCOMPATIBLE",
    "PAGE_SIZE",
    "RMAP_ITEM_SIZE",
    "ZERO",
    "ZERO_CHECKSUM",
    "Ksm",
    "KsmMm",
    "checksum",
    "skip_age",
    "vma_ksm_compatible",
]
