"""When the written replay can be skipped (``replay()``'s peak_map_count_range).

A replay as if every writable private VMA had been written (``assume_written``) differs from
the plain one only where a merge is refused because of anon_vmas (is_mergeable_anon_vma(),
and the prev/next check of a three-way merge), or where mprotect() keeps VM_ACCOUNT on a VMA
losing PROT_WRITE because it has one (mprotect_fixup(); see ``_keeps_account``; mremap,
which also reads it, is never cleared). Splits, map_count checks, placement and unmapping
read only what the two replays share while they have the same VMAs (bounds, flags, files,
offsets). With no fork in the trace every anon_vma is "singular", and then every anon_vma
test a merge makes passes unless two of the VMAs taking part both hold one.

So a call whose participants (the VMAs in its range and the two adjacent to it) include at
most one VMA that may hold an anon_vma in the written replay leaves both replays with the
same VMAs, the same map_count and the same per-call delta. In the written replay a VMA may
hold one only if the plain replay's does, or it is writable and private (written at once),
or it overlaps an address range that such a VMA lost its write permission in or merged
into (the taint, per mm). While every call is cleared this way, replay() skips the written
replay; the first call that is not (two such participants, a fork, mremap, mlockall, an
image moved off a tainted range, more than TAINT_MAX tainted ranges) marks the trace
``sensitive`` and the written replay runs in full. tests/unit/test_replay_twin.py checks the
result against always running it.
"""

from __future__ import annotations

from typing import Any

from vmsim.constants import (
    MADV_COLD,
    MADV_COLLAPSE,
    MADV_DONTNEED,
    MADV_DONTNEED_LOCKED,
    MADV_FREE,
    MADV_GUARD_REMOVE,
    MADV_PAGEOUT,
    MADV_POPULATE_READ,
    MADV_POPULATE_WRITE,
    MADV_REMOVE,
    MADV_WILLNEED,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    PAGE_SIZE,
    PROT_GROWSDOWN,
    PROT_GROWSUP,
    PROT_WRITE,
)
from vmsim.errors import MmError
from vmsim.mm.core import PAGE_MASK64, page_align
from vmsim.mm.flags import VM_ACCOUNT, VM_SHARED, VM_WRITE
from vmsim.mm.vma import Vma
from vmsim.process import Process
from vmsim.trace.events import Syscall

# calls that never merge VMAs (munmap and shmdt only unmap; shmat maps shared memory, which
# has no anon_vma): the written hypothesis cannot change what they do
_NEVER_MERGE = frozenset({"munmap", "shmdt", "shmat"})
# madvise() advice that acts on pages and leaves every VMA as it was (madvise_vma_behavior())
_PAGE_ADVICE = frozenset(
    {
        MADV_WILLNEED,
        MADV_DONTNEED,
        MADV_FREE,
        MADV_REMOVE,
        MADV_COLD,
        MADV_PAGEOUT,
        MADV_POPULATE_READ,
        MADV_POPULATE_WRITE,
        MADV_DONTNEED_LOCKED,
        MADV_COLLAPSE,
        MADV_GUARD_REMOVE,
    }
)
# masks of the hot path (before_writable()), computed once
_PAGE_OFFSET = PAGE_SIZE - 1
_WRITE_OR_SHARED = VM_WRITE | VM_SHARED
# calls the replay's handler judges itself, after it may have moved an image (ASLR)
JUDGED_IN_HANDLER = frozenset({"mmap", "mprotect", "pkey_mprotect"})
# calls that change a range's flags through vma_modify()
_MODIFY_CALLS = frozenset(
    {"mprotect", "pkey_mprotect", "madvise", "mlock", "mlock2", "munlock", "mseal"}
)

Judgement = tuple[int, int, int] | bool | None
"""What :meth:`WrittenWatch.before` found: False (the written replay could differ), None
(nothing to follow), or (the address judged, the bounds of the one participant that may
hold an anon_vma, or 0, 0)."""


class WrittenWatch:
    """Follows a plain replay call by call; ``sensitive`` once a call is not cleared."""

    TAINT_MAX = 256

    def __init__(self, use_recorded: bool) -> None:
        self.use_recorded = use_recorded
        self.sensitive = False
        self._taints: dict[int, tuple[Any, list[tuple[int, int]]]] = {}

    @staticmethod
    def may_hold_anon(vma: Vma, taint: list[tuple[int, int]]) -> bool:
        if vma.anon_vma is not None or vma.flags & (VM_WRITE | VM_SHARED) == VM_WRITE:
            return True
        start, end = vma.start, vma.end
        for lo, hi in taint:  # noqa: SIM110 (any() over a generator costs twice this)
            if lo < end and start < hi:
                return True
        return False

    def _keeps_account(self, p: Process, vmas: list[Vma]) -> bool:
        """mprotect_fixup() takes VM_ACCOUNT away from an anonymous VMA losing PROT_WRITE
        only if it has no anon_vma: the one place outside merging where an anon_vma decides
        a VMA's flags. True if that could differ between the two replays."""
        taint = self._taint_of(p)
        return any(
            v.flags & VM_ACCOUNT
            and v.is_anonymous
            and v.anon_vma is None
            and self.may_hold_anon(v, taint)
            for v in vmas
        )

    def _taint_of(self, p: Process) -> list[tuple[int, int]]:
        mm = p.mm
        entry = self._taints.get(id(mm))
        if entry is None:
            entry = self._taints[id(mm)] = (mm, [])  # holds mm: its id is not reused
        return entry[1]

    def before(self, p: Process, ev: Syscall) -> Judgement:
        """Before a call: False if the written replay could differ; else None, or (the
        address judged, the bounds of the one participant that may hold an anon_vma or 0, 0)
        for :meth:`after`."""
        name = ev.name
        a = ev.args
        mm = p.mm
        tree = mm.tree
        if (
            name == "mprotect"
            and len(a) >= 3
            and type(a[0]) is int
            and type(a[1]) is int
            and type(a[2]) is int
            and a[2] & (PROT_WRITE | PROT_GROWSDOWN | PROT_GROWSUP) == PROT_WRITE
        ):
            # the fill-to-limit hot path, as the _MODIFY_CALLS case below takes it for an
            # mprotect that leaves the range writable (so no VM_ACCOUNT question)
            lo = a[0]
            hi = lo + ((a[1] + PAGE_SIZE - 1) & PAGE_MASK64)  # page_align(a[1])
            if hi <= lo:
                return None
            vma = tree.lookup(lo)
            if vma is not None and vma.start < lo and hi < vma.end:
                entry = self._taints.get(id(mm))
                taint = entry[1] if entry is not None else self._taint_of(p)
                if self.may_hold_anon(vma, taint):
                    return (lo, vma.start, vma.end)
                return None
            return self._participants(p, name, lo, hi)
        if name in _NEVER_MERGE:
            return None
        if name in _MODIFY_CALLS:
            if len(a) < 2 or type(a[0]) is not int or type(a[1]) is not int:
                return False
            if name == "madvise" and len(a) > 2 and a[2] in _PAGE_ADVICE:
                return None  # advice on pages only: do_madvise() changes no VMA
            if name in ("mprotect", "pkey_mprotect") and (
                len(a) < 3 or type(a[2]) is not int or a[2] & (PROT_GROWSDOWN | PROT_GROWSUP)
            ):
                return False  # PROT_GROWSDOWN widens the range to the VMA's start
            lo = a[0]
            hi = lo + ((a[1] + PAGE_SIZE - 1) & PAGE_MASK64)  # page_align(a[1])
            if hi <= lo:
                return None  # nothing to change (len 0), or refused before any change
            vma = tree.lookup(lo)
            if (
                name in ("mprotect", "pkey_mprotect")
                and not a[2] & PROT_WRITE  # type: ignore[operator]
                and self._keeps_account(p, tree.range(lo, hi))
            ):
                return False
            if vma is not None and vma.start < lo and hi < vma.end:
                # strictly inside one VMA: vma_modify() splits, it tries no merge
                entry = self._taints.get(id(mm))
                taint = entry[1] if entry is not None else self._taint_of(p)
                if self.may_hold_anon(vma, taint):
                    return (lo, vma.start, vma.end)
                return None
        elif name == "mmap":
            if len(a) < 4 or type(a[0]) is not int or type(a[1]) is not int:
                return False
            flags = a[3] if type(a[3]) is int else 0
            if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE):
                lo = a[0]
            elif self.use_recorded and ev.errno is None and ev.ret is not None:
                lo = ev.ret  # placed where the kernel put it (checked in after())
            else:
                return False
            hi = lo + page_align(a[1])
            if hi <= lo:
                return None
        elif name == "brk":
            if not a or type(a[0]) is not int:
                return False
            lo, hi = page_align(mm.brk), page_align(a[0])
            if a[0] < mm.start_brk or hi <= lo:
                return None  # a query, a refusal or a shrink: nothing merges
        else:
            return False  # mremap, mlockall, munlockall, ...
        return self._participants(p, name, lo, hi)

    def before_writable(self, p: Process, lo: int, length: int) -> Judgement:
        """:meth:`before` of ``mprotect(lo, length, prot)`` with three int arguments and a
        ``prot`` that leaves the range writable, without PROT_GROWSDOWN/UP (the replay's
        handler has checked them): the fill-to-limit hot path, the same judgement."""
        hi = lo + ((length + _PAGE_OFFSET) & PAGE_MASK64)  # page_align(length)
        if hi <= lo:
            return None
        mm = p.mm
        vma = mm.tree.lookup(lo)
        if vma is None or not (vma.start < lo and hi < vma.end):
            return self._participants(p, "mprotect", lo, hi)
        # strictly inside one VMA: vma_modify() splits, it tries no merge; may_hold_anon()
        # inline (an mm with no taint entry has no tainted range)
        start, end = vma.start, vma.end
        if vma.anon_vma is not None or vma.flags & _WRITE_OR_SHARED == VM_WRITE:
            return (lo, start, end)
        entry = self._taints.get(id(mm))
        if entry is not None:
            for t_lo, t_hi in entry[1]:
                if t_lo < end and start < t_hi:
                    return (lo, start, end)
        return None

    def _participants(self, p: Process, name: str, lo: int, hi: int) -> Judgement:
        """The VMAs a call on ``[lo, hi)`` may merge: at most one may hold an anon_vma."""
        tree = p.mm.tree
        taint = self._taint_of(p)
        parts = tree.range(lo, hi)
        before = tree.prev_of(lo)
        after = tree.find(hi)
        takers = list(parts)
        # a merge needs adjacency: a neighbour with a gap between takes no part
        if before is not None and before.end == lo and (not parts or before is not parts[0]):
            takers.append(before)
        if after is not None and after.start == hi and (not parts or after is not parts[-1]):
            takers.append(after)
        held = [v for v in takers if self.may_hold_anon(v, taint)]
        if len(held) > 1:
            return False
        if held:
            return (lo, held[0].start, held[0].end)
        return (lo, 0, 0) if name == "mmap" else None

    def after(
        self, p: Process, ev: Syscall, result: int, err: MmError | None, pre: tuple[int, int, int]
    ) -> None:
        """After a cleared call. The one VMA that may hold an anon_vma in the written replay
        was ``[start, end)`` before the call; any anon_vma it held is now on the VMAs over
        that range (split pieces, a merge's survivor, a range that lost PROT_WRITE): those
        the predicate no longer covers join the taint."""
        lo, start, end = pre
        if ev.name == "mmap" and err is None and result != lo:
            self.sensitive = True  # placed elsewhere than judged
            return
        if start == end:
            return
        taint = self._taint_of(p)
        for v in p.mm.tree.range(start, end):
            if not self.may_hold_anon(v, taint):
                taint.append((v.start, v.end))
        if len(taint) > self.TAINT_MAX:
            self.sensitive = True

    def before_move(self, p: Process) -> list[Vma]:
        """The VMAs over tainted ranges, before the loader moves an image."""
        taint = self._taint_of(p)
        return [v for lo, hi in taint for v in p.mm.tree.range(lo, hi)]

    def after_move(self, p: Process, held: list[Vma]) -> None:
        taint = self._taint_of(p)
        for v in held:
            if not any(lo < v.end and v.start < hi for lo, hi in taint):
                self.sensitive = True


__all__ = [
    "JUDGED_IN_HANDLER",
    "Judgement",
    "WrittenWatch",
]
