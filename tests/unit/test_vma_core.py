"""The VMA core on its own, in the style of Linux's tools/testing/vma: no Machine.

A ``VmaTree`` and the operations of ``vmsim.mm.vma_ops`` (mm/vma.c) run against ``StubMm``, a
recording stand-in for the hooks ``AddressSpace`` implements (``VmaHooks``, vma_internal.h).
Layouts are drawn as strings over page indices: one character per page, ``.`` unmapped, each
VMA a run of one letter (``build`` reads them, ``render`` draws them back).

Expected results are written by hand from the kernel's rules (the spec's §2 and mm/vma.c),
never read back from the code. The merge cases, over pages ``0123456789`` (P prev, V the VMA
being changed or the new range, N next; ``*`` the range)::

    new range (vma_merge_new_range)          existing range (vma_merge_existing_range)
    before    range   after    case          before     range   after      case
    PP..NN    [2,4)   PPPPPP   both          PPVVNN     [2,4)   PPPPPP     both: V, N deleted
    PP....    [2,4)   PPPP..   prev expands  PPVVVV..   [2,4)   PPPPVV..   left: V shrinks
    ....NN    [2,4)   ..NNNN   next expands  PPVV..     [2,4)   PPPP..     left: V deleted
    PP...NN   [2,4)   PPPP.NN  prev only     ..VVVVNN   [4,6)   ..VVNNNN   right: V shrinks
    PP..NN    (no)    PP..NN   none          ..VVNN     [2,4)   ..NNNN     right: V deleted
                                             PPVVVVNN   [3,5)   PPVxyVNN   none: two splits

Which properties decide (each enumerated over all its combinations below):

    property          values                                    merge with a side iff
    sticky flags      VM_MAYBE_GUARD on each piece              always; the result keeps it
    other flags       each flag set or not on each piece        equal on both; never VM_SPECIAL
    anon_vma          none / X / X inherited by fork / Y        the PAIR table below
    file              none / F / G (two opens of one file)      the same open file
    page offsets      contiguous or not                         contiguous
"""

from __future__ import annotations

import ast
import itertools
import random
import string
from bisect import insort
from pathlib import Path

import pytest

from vmsim.mm import vma_ops
from vmsim.mm.flags import (
    VM_ACCOUNT,
    VM_DONTCOPY,
    VM_DONTDUMP,
    VM_DONTEXPAND,
    VM_EXEC,
    VM_GROWSDOWN,
    VM_HUGEPAGE,
    VM_IO,
    VM_LOCKED,
    VM_MAYBE_GUARD,
    VM_MAYREAD,
    VM_MAYWRITE,
    VM_MERGEABLE,
    VM_MIXEDMAP,
    VM_NORESERVE,
    VM_PFNMAP,
    VM_RAND_READ,
    VM_READ,
    VM_SEALED,
    VM_SEQ_READ,
    VM_SHARED,
    VM_WIPEONFORK,
    VM_WRITE,
)
from vmsim.mm.tree import VmaTree, _Ordered
from vmsim.mm.vma import AnonVma, Inode, OpenFile, Vma
from vmsim.mm.vma_ops import VmaMergeStruct

PAGE = 4096
RW = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE
RO = VM_READ | VM_MAYREAD | VM_MAYWRITE


# ------------------------------------------------------------------ the stub mm
class Limits:
    """The two fields of MmConfig the VMA core reads and writes."""

    def __init__(self, max_map_count: int) -> None:
        self.max_map_count = max_map_count
        self.map_count_needed = 0


class StubMm:
    """A VmaHooks that records what the VMA core asks of the rest of mm."""

    def __init__(self, max_map_count: int = 65530) -> None:
        self.tree = VmaTree()
        self.cfg = Limits(max_map_count)
        self.locked_vm = 0
        self.log: list[tuple[str, object]] = []

    def vm_unacct(self, pages: int) -> None:
        self.log.append(("vm_unacct", pages))

    def unmap_vmas(self, vmas: list[Vma]) -> None:
        # the VMAs are out of the tree by now (vms_clear_ptes() runs on detached VMAs)
        assert all(self.tree.lookup(v.start) is not v for v in vmas)
        self.log.append(("unmap_vmas", [(v.start // PAGE, v.end // PAGE) for v in vmas]))

    def remove_vma(self, vma: Vma) -> None:
        self.log.append(("remove_vma", (vma.start // PAGE, vma.end // PAGE)))


def build(
    layout: str,
    *,
    flags: dict[str, int] | None = None,
    anon: dict[str, AnonVma | None] | None = None,
    singular: dict[str, bool] | None = None,
    file: dict[str, OpenFile | None] | None = None,
    pgoff: dict[str, int] | None = None,
    name: dict[str, str] | None = None,
    max_map_count: int = 65530,
) -> tuple[StubMm, dict[str, Vma]]:
    """A StubMm whose tree holds the VMAs drawn in ``layout`` (one letter per VMA, ``.`` a
    free page). Each VMA is private anonymous read-write with ``vm_pgoff`` = its first page
    (as mmap gives), unless a keyword maps its letter to something else."""
    mm = StubMm(max_map_count)
    vmas: dict[str, Vma] = {}
    page = 0
    for letter, run in itertools.groupby(layout):
        n = len(list(run))
        if letter != ".":
            assert letter not in vmas, f"letter {letter} used twice in {layout!r}"
            vma = Vma(
                page * PAGE,
                (page + n) * PAGE,
                (flags or {}).get(letter, RW),
                (pgoff or {}).get(letter, page),
                (file or {}).get(letter),
                (anon or {}).get(letter),
                (singular or {}).get(letter, True),
                (name or {}).get(letter),
            )
            mm.tree.insert_new(vma)
            vmas[letter] = vma
        page += n
    return mm, vmas


def render(tree: VmaTree, pages: int, names: dict[str, Vma] | None = None) -> str:
    """The layout of the first ``pages`` pages: with ``names``, each VMA drawn with the letter
    it was built with (``?`` for one the code made, e.g. by a split); without, the VMAs
    lettered A, B, C... in address order."""
    out = ["."] * pages
    by_id = {id(v): k for k, v in (names or {}).items()}
    for i, vma in enumerate(tree):
        if vma.start >= pages * PAGE:
            break
        ch = by_id.get(id(vma), "?") if names is not None else string.ascii_uppercase[i % 26]
        for pg in range(vma.start // PAGE, min(vma.end // PAGE, pages)):
            out[pg] = ch
    return "".join(out)


def check(mm: StubMm) -> None:
    """The tree's invariants: sorted, non-overlapping, non-empty, page-aligned VMAs, and the
    free-space index exactly their complement."""
    cursor = 0
    gaps = []
    for vma in mm.tree:
        assert vma.start % PAGE == 0 and vma.end % PAGE == 0 and vma.start < vma.end
        assert vma.start >= cursor
        if vma.start > cursor:
            gaps.append((cursor, vma.start))
        cursor = vma.end
    gaps.append((cursor, 1 << 64))
    free = mm.tree.free
    assert free.ranges() == gaps
    assert free._starts == {end: start for start, end in gaps}  # the end -> start index
    assert free.used == sum(v.end - v.start for v in mm.tree)


def new_range(
    mm: StubMm,
    start: int,
    end: int,
    *,
    flags: int = RW,
    file: OpenFile | None = None,
    pgoff: int | None = None,
    anon: AnonVma | None = None,
    src_singular: bool = True,
) -> Vma | None:
    """vma_merge_new_range() of pages [start, end), with prev/next found as mmap_region() does."""
    tree = mm.tree
    vmg = VmaMergeStruct(
        start * PAGE,
        end * PAGE,
        flags,
        file,
        start if pgoff is None else pgoff,
        tree.prev_of(start * PAGE),
        tree.find(start * PAGE),
        anon,
        src_singular,
    )
    return vma_ops.vma_merge_new_range(tree, vmg)


def modify(mm: StubMm, vma: Vma, start: int, end: int, flags: int) -> Vma:
    return vma_ops.vma_modify(mm, vma, start * PAGE, end * PAGE, flags)


def pages_of(vma: Vma) -> tuple[int, int]:
    return vma.start // PAGE, vma.end // PAGE


# ------------------------------------------------------------------ the helpers
def test_build_and_render_round_trip():
    mm, v = build("AA.B....CC")
    assert render(mm.tree, 10) == "AA.B....CC"
    assert render(mm.tree, 10, v) == "AA.B....CC"
    assert [pages_of(x) for x in mm.tree] == [(0, 2), (3, 4), (8, 10)]
    assert [x.pgoff for x in mm.tree] == [0, 3, 8]
    assert len(mm.tree) == 3
    check(mm)


# ------------------------------------------------------------ simple operations
def test_simple_merge():
    """tools/testing/vma test_simple_merge: [0,1) + [2,3), new [1,2) -> one VMA, pgoff 0."""
    mm, v = build("A.B")
    merged = new_range(mm, 1, 2)
    assert merged is v["A"]
    assert render(mm.tree, 3, v) == "AAA"
    assert (pages_of(merged), merged.pgoff, len(mm.tree)) == ((0, 3), 0, 1)
    check(mm)


def test_simple_modify():
    """test_simple_modify: new flags on [1,2) of [0,3) -> three VMAs, pgoff 0/1/2; the
    returned VMA is the middle one."""
    mm, v = build("AAA")
    got = modify(mm, v["A"], 1, 2, RO)
    assert render(mm.tree, 3) == "ABC"
    assert [(pages_of(x), x.pgoff, x.flags) for x in mm.tree] == [
        ((0, 1), 0, RW),
        ((1, 2), 1, RO),
        ((2, 3), 2, RW),
    ]
    assert pages_of(got) == (1, 2) and got.flags == RO
    assert mm.tree.first() is v["A"]  # the original keeps the low part (new_below = 0)
    check(mm)


def test_split_keeps_every_field():
    a = AnonVma()
    f = OpenFile(Inode("/f"))
    mm, v = build("AAAA", flags={"A": RO | VM_LOCKED}, anon={"A": a}, file={"A": f}, pgoff={"A": 7})
    v["A"].anon_singular = False
    hi = vma_ops.split_vma_nocheck(mm.tree, v["A"], 3 * PAGE)
    assert render(mm.tree, 4) == "AAAB"
    assert (pages_of(v["A"]), v["A"].pgoff) == ((0, 3), 7)
    assert (pages_of(hi), hi.pgoff, hi.flags) == ((3, 4), 10, RO | VM_LOCKED)
    assert hi.file is f and hi.anon_vma is a and hi.anon_singular is False
    check(mm)
    # every other field is copied too (a field added to Vma must be copied by the split)
    v["A"].name = "[x]"
    v["A"].swap_ra = (1, 2, 3)
    hi2 = vma_ops.split_vma_nocheck(mm.tree, v["A"], 1 * PAGE)
    for slot in Vma.__slots__:
        if slot not in ("start", "end", "pgoff"):
            assert getattr(hi2, slot) is getattr(v["A"], slot), slot


def test_split_in_three_keeps_every_field():
    """split_vma_twice() (vma_modify() of a VMA's middle) copies what two splits copy."""
    a = AnonVma()
    f = OpenFile(Inode("/f"))
    mm, v = build("AAAAAA", flags={"A": RO}, anon={"A": a}, file={"A": f}, pgoff={"A": 7})
    v["A"].anon_singular = False
    v["A"].name = "[x]"
    v["A"].swap_ra = (1, 2, 3)
    mid = vma_ops.split_vma_twice(mm, v["A"], 2 * PAGE, 4 * PAGE)
    assert render(mm.tree, 6) == "AABBCC"
    lo, _, hi = list(mm.tree)
    assert lo is v["A"] and mm.tree.lookup(2 * PAGE) is mid
    assert [(pages_of(x), x.pgoff) for x in (lo, mid, hi)] == [
        ((0, 2), 7),
        ((2, 4), 9),
        ((4, 6), 11),
    ]
    for new in (mid, hi):
        for slot in Vma.__slots__:
            if slot not in ("start", "end", "pgoff"):
                assert getattr(new, slot) is getattr(lo, slot), slot
    check(mm)


# --------------------------------------------------------------- the map_count
def test_split_vma_refuses_at_the_limit():
    """split_vma(): ENOMEM once map_count >= max_map_count, nothing changed."""
    mm, v = build("AAAA.B", max_map_count=2)
    with pytest.raises(OSError) as e:
        vma_ops.split_vma(mm, v["A"], 2 * PAGE)
    assert e.value.errno == 12  # ENOMEM
    assert render(mm.tree, 6) == "AAAA.B"
    assert mm.cfg.map_count_needed == 3
    mm.cfg.max_map_count = 3
    vma_ops.split_vma(mm, v["A"], 2 * PAGE)
    assert render(mm.tree, 6) == "AABB.C"


def test_modify_inside_fails_on_the_second_split_and_keeps_the_first():
    """Two splits, each checked: at map_count 2 of 3 the first split passes (3 <= 3), the
    second fails (4 > 3) and the first stays (the kernel does not undo it)."""
    mm, v = build("AAAA.B", max_map_count=3)
    with pytest.raises(OSError) as e:
        modify(mm, v["A"], 1, 3, RO)
    assert e.value.detail == "split_vma(): map_count 3, max_map_count 3"
    assert mm.cfg.map_count_needed == 4
    assert render(mm.tree, 6) == "ABBB.C"
    assert [x.flags for x in mm.tree] == [RW, RW, RW]
    check(mm)


def test_modify_inside_fails_on_the_first_split_and_changes_nothing():
    mm, v = build("AAAA.B", max_map_count=2)
    with pytest.raises(OSError) as e:
        modify(mm, v["A"], 1, 3, RO)
    assert e.value.errno == 12
    assert e.value.detail == "split_vma(): map_count 2, max_map_count 2"
    assert render(mm.tree, 6, v) == "AAAA.B"
    assert mm.cfg.map_count_needed == 3  # the first split needed 3; the second was not tried
    check(mm)


def test_modify_inside_at_the_limit_passes_both_checks():
    mm, v = build("AAAA.B", max_map_count=4)
    got = modify(mm, v["A"], 1, 3, RO)
    assert render(mm.tree, 6) == "ABBC.D"
    assert render(mm.tree, 6, v) == "A???.B"
    assert (pages_of(got), got.pgoff, got.flags) == ((1, 3), 1, RO)
    assert mm.cfg.map_count_needed == 4
    check(mm)


def test_munmap_strictly_inside_is_checked_edges_are_not():
    mm, _v = build("AAAA", max_map_count=1)
    with pytest.raises(OSError):
        vma_ops.do_vmi_munmap(mm, 1 * PAGE, 2 * PAGE)  # would make 2 VMAs of 1
    assert render(mm.tree, 4) == "AAAA"
    vma_ops.do_vmi_munmap(mm, 0, 1 * PAGE)  # the head: one VMA stays one
    assert render(mm.tree, 4) == ".AAA"
    check(mm)


# ------------------------------------------------------------------- unmapping
def test_munmap_gathers_splits_and_calls_the_hooks_in_order():
    """vms_gather_munmap_vmas() splits both edges; vms_complete_munmap_vmas() takes the VMAs
    out of the tree, then lowers locked_vm, clears PTEs, puts files, unaccounts."""
    f = OpenFile(Inode("/f"))
    mm, v = build(
        "AAAB.CCC",
        flags={"A": RW | VM_ACCOUNT, "B": RO | VM_LOCKED, "C": RW | VM_ACCOUNT | VM_LOCKED},
        file={"B": f},
    )
    mm.locked_vm = 4
    vma_ops.do_vmi_munmap(mm, 2 * PAGE, 7 * PAGE)
    assert render(mm.tree, 8, v) == "AA.....?"
    assert mm.log == [
        ("unmap_vmas", [(2, 3), (3, 4), (5, 7)]),
        ("remove_vma", (3, 4)),
        ("vm_unacct", 1 + 2),
    ]
    assert mm.locked_vm == 4 - 1 - 2
    check(mm)


def test_munmap_of_a_hole_does_nothing():
    mm, v = build("A..B")
    vma_ops.do_vmi_munmap(mm, 1 * PAGE, 3 * PAGE)
    assert render(mm.tree, 4, v) == "A..B" and mm.log == []


def test_munmap_of_a_sealed_vma_is_eperm_after_the_first_split():
    mm, _v = build("AAB", flags={"B": RW | VM_SEALED})
    with pytest.raises(OSError) as e:
        vma_ops.do_vmi_munmap(mm, 1 * PAGE, 3 * PAGE)
    assert e.value.errno == 1  # EPERM
    assert render(mm.tree, 3) == "ABC"  # the split of A stays
    assert mm.log == []


@pytest.mark.parametrize("count", [1, 8, 9, 40, 3000])
def test_munmap_of_many_vmas_frees_the_whole_span(count):
    """Every other page mapped (".A.B.C..."); one munmap over all of them (more than 8
    VMAs leave the tree in one cut)."""
    mm = StubMm()
    for i in range(count):
        mm.tree.insert_new(Vma((2 * i + 1) * PAGE, (2 * i + 2) * PAGE, RW, 2 * i + 1))
    assert render(mm.tree, 6) == (".A.B.C" if count >= 3 else ".A....")
    vma_ops.do_vmi_munmap(mm, 0, 2 * count * PAGE)
    assert len(mm.tree) == 0
    assert mm.tree.free.ranges() == [(0, 1 << 64)]
    assert mm.tree.free.used == 0
    assert mm.log == [("unmap_vmas", [(2 * i + 1, 2 * i + 2) for i in range(count)])]


def test_munmap_of_many_vmas_between_neighbours_that_stay():
    mm = StubMm()
    mm.tree.insert_new(Vma(0, PAGE, RW, 0))
    for i in range(20):
        mm.tree.insert_new(Vma((2 * i + 2) * PAGE, (2 * i + 3) * PAGE, RO, 2 * i + 2))
    mm.tree.insert_new(Vma(50 * PAGE, 51 * PAGE, RW, 50))
    vma_ops.do_vmi_munmap(mm, PAGE, 50 * PAGE)
    assert render(mm.tree, 52) == "A" + "." * 49 + "B."
    assert mm.tree.free.used == 2 * PAGE
    check(mm)


# ----------------------------------------------------- existing-range case table
@pytest.mark.parametrize(
    ("before", "rng", "after", "survivor"),
    [
        # both: V and N deleted, P extended over them
        ("PPVVNN", (2, 4), "PPPPPP", "P"),
        # left: P grows over the head of V (V shrinks), or over all of V (V deleted)
        ("PPVVVV..", (2, 4), "PPPPVV..", "P"),
        ("PPVV..", (2, 4), "PPPP..", "P"),
        # right: N grows down over the tail of V (V shrinks), or over all of V
        ("..VVVVNN", (4, 6), "..VVNNNN", "N"),
        ("..VVNN", (2, 4), "..NNNN", "N"),
        # whole V between incompatible-flag neighbours: no merge, V changes in place
        ("..VV..", (2, 4), "..VV..", "V"),
    ],
)
def test_merge_existing_cases(before, rng, after, survivor):
    """vma_merge_existing_range(): V is read-only, P and N read-write; V's range becomes
    read-write."""
    mm, v = build(before, flags={"V": RO})
    got = modify(mm, v["V"], *rng, RW)
    assert render(mm.tree, len(before), v) == after
    assert got is v[survivor]
    assert pages_of(got) == (
        after.index(survivor),
        after.rindex(survivor) + 1 if survivor != "V" else rng[1],
    )
    assert got.flags == RW
    assert [x.pgoff for x in mm.tree] == [x.start // PAGE for x in mm.tree]
    check(mm)


def test_merge_existing_inside_splits_twice():
    """A range strictly inside V never merges: split at start, then at end."""
    mm, v = build("PPVVVVNN", flags={"V": RO})
    got = modify(mm, v["V"], 3, 5, RW)
    assert render(mm.tree, 8) == "AABCCDEE"
    assert render(mm.tree, 8, v) == "PPV???NN"
    assert [(pages_of(x), x.flags) for x in mm.tree] == [
        ((0, 2), RW),
        ((2, 3), RO),
        ((3, 5), RW),
        ((5, 6), RO),
        ((6, 8), RW),
    ]
    assert pages_of(got) == (3, 5)
    check(mm)


def test_modify_to_the_same_neighbour_flags_but_not_touching_an_end():
    mm, v = build("PPVVVV", flags={"V": RO})
    modify(mm, v["V"], 3, 4, RW)
    assert [pages_of(x) for x in mm.tree] == [(0, 2), (2, 3), (3, 4), (4, 6)]


# ------------------------------------------------------------------ sticky flags
@pytest.mark.parametrize(
    ("range_sticky", "p_sticky", "n_sticky"), list(itertools.product([False, True], repeat=3))
)
def test_merge_new_sticky(range_sticky, p_sticky, n_sticky):
    """The kernel's test_merge_new runs over every sticky-flag combination: VM_MAYBE_GUARD
    ("gu") never blocks a merge, and the merged VMA carries it if any piece did."""
    g = VM_MAYBE_GUARD
    mm, v = build(
        "PP..NN", flags={"P": RW | (g if p_sticky else 0), "N": RW | (g if n_sticky else 0)}
    )
    got = new_range(mm, 2, 4, flags=RW | (g if range_sticky else 0))
    assert got is v["P"]
    assert render(mm.tree, 6, v) == "PPPPPP"
    assert got.flags == RW | (g if (range_sticky or p_sticky or n_sticky) else 0)
    check(mm)


@pytest.mark.parametrize(
    ("new_sticky", "p_sticky", "v_sticky", "n_sticky"),
    list(itertools.product([False, True], repeat=4)),
)
def test_merge_existing_sticky(new_sticky, p_sticky, v_sticky, n_sticky):
    """The same over the four pieces of an existing-range merge: prev, the VMA's old flags,
    the flags asked for, next (16 combinations)."""
    g = VM_MAYBE_GUARD
    mm, v = build(
        "PPVVNN",
        flags={
            "P": RW | (g if p_sticky else 0),
            "V": RO | (g if v_sticky else 0),
            "N": RW | (g if n_sticky else 0),
        },
    )
    got = modify(mm, v["V"], 2, 4, RW | (g if new_sticky else 0))
    assert got is v["P"]
    assert render(mm.tree, 6, v) == "PPPPPP"
    assert got.flags == RW | (g if (new_sticky or p_sticky or v_sticky or n_sticky) else 0)


# ---------------------------------------------------------------- other flags
BLOCKING = [
    VM_WRITE,
    VM_EXEC,
    VM_SHARED,
    VM_GROWSDOWN,
    VM_LOCKED,
    VM_SEQ_READ,
    VM_RAND_READ,
    VM_DONTCOPY,
    VM_ACCOUNT,
    VM_NORESERVE,
    VM_WIPEONFORK,
    VM_DONTDUMP,
    VM_HUGEPAGE,
    VM_MERGEABLE,
    VM_SEALED,
]
SPECIAL = [VM_IO, VM_DONTEXPAND, VM_PFNMAP, VM_MIXEDMAP]


def _expect_sides(can_left: bool, can_right: bool, new: bool) -> str:
    """The layout after a new range [2,4) between PP and NN (or V=[2,4) changed in place)."""
    if can_left and can_right:
        return "PPPPPP"
    if can_left:
        return "PPPPNN"
    if can_right:
        return "PPNNNN"
    return "PP..NN" if new else "PPVVNN"


@pytest.mark.parametrize("flag", BLOCKING + SPECIAL)
@pytest.mark.parametrize(
    ("p_has", "r_has", "n_has"), list(itertools.product([False, True], repeat=3))
)
def test_merge_flags(flag, p_has, r_has, n_has):
    """Each flag set or not on prev, the range and next, in both merge paths. A side merges
    iff its flags equal the range's; a VM_SPECIAL flag on the range (or only on one side,
    the flags then differ) blocks every merge."""
    special = flag in SPECIAL
    if special:
        left = not p_has and not r_has
        right = not n_has and not r_has
    else:
        left = p_has == r_has
        right = n_has == r_has
    base = VM_READ | VM_MAYREAD | VM_MAYWRITE  # read-only: the range's flag can be VM_WRITE
    fl = {"P": base | (flag if p_has else 0), "N": base | (flag if n_has else 0)}

    mm, v = build("PP..NN", flags=fl)
    new_range(mm, 2, 4, flags=base | (flag if r_has else 0))
    assert render(mm.tree, 6, v) == _expect_sides(left, right, True)
    check(mm)

    # the existing range: V=[2,4) had other flags (VM_DONTDUMP toggled, or VM_DONTCOPY for
    # VM_DONTDUMP itself) and gets the range's
    other = VM_DONTCOPY if flag == VM_DONTDUMP else VM_DONTDUMP
    mm, v = build("PPVVNN", flags={**fl, "V": base | other | (flag if r_has else 0)})
    modify(mm, v["V"], 2, 4, base | (flag if r_has else 0))
    expect = _expect_sides(left, right, False)
    assert render(mm.tree, 6, v) == expect
    check(mm)


def test_a_named_special_mapping_never_merges():
    """A special mapping ([vdso]...) is told apart by its name even with equal flags."""
    mm, v = build("PP..NN", name={"P": "[vdso]"})
    new_range(mm, 2, 4)
    assert render(mm.tree, 6, v) == "PPNNNN"  # next takes it, the named prev does not


# -------------------------------------------------------------------- anon_vma
X = AnonVma()
Y = AnonVma()
# anon_vma states of one VMA: none, X, X inherited through fork (its chain not singular), Y
ANON = {"-": None, "X": X, "x": X, "Y": Y}
SINGULAR = {"-": True, "X": True, "x": False, "Y": True}
# is_mergeable_anon_vma(), written out from its three cases for (target, source):
#   1. target none, source has one: the target would take it; not from a fork child.
#   2. target has one, source none: the source would use it; not a fork child's.
#   3. otherwise: the very same anon_vma (or both none).
PAIR = {
    ("-", "-"): True,
    ("-", "X"): True,
    ("-", "x"): False,
    ("-", "Y"): True,
    ("X", "-"): True,
    ("X", "X"): True,
    ("X", "x"): True,
    ("X", "Y"): False,
    ("x", "-"): False,
    ("x", "X"): True,
    ("x", "x"): True,
    ("x", "Y"): False,
    ("Y", "-"): True,
    ("Y", "X"): False,
    ("Y", "x"): False,
    ("Y", "Y"): True,
}


def _anon_expect(p: str, s: str, n: str) -> tuple[bool, bool]:
    left = PAIR[(p, s)]
    right = PAIR[(n, s)]
    if left and right and ANON[p] is not None and ANON[n] is not None and ANON[p] is not ANON[n]:
        right = False  # are_anon_vmas_compatible(prev, next): only prev merges
    return left, right


@pytest.mark.parametrize(("p", "s", "n"), list(itertools.product("-XxY", repeat=3)))
def test_merge_new_anon_vma(p, s, n):
    """64 combinations of prev's, the range's (copy_vma()'s source, for an mremap move) and
    next's anon_vma state."""
    left, right = _anon_expect(p, s, n)
    mm, v = build(
        "PP..NN",
        anon={"P": ANON[p], "N": ANON[n]},
        singular={"P": SINGULAR[p], "N": SINGULAR[n]},
    )
    got = new_range(mm, 2, 4, anon=ANON[s], src_singular=SINGULAR[s])
    assert render(mm.tree, 6, v) == _expect_sides(left, right, True)
    if got is not None:
        pieces = [s] + ([p] if left else []) + ([n] if right else [])
        have = [ANON[c] for c in pieces if ANON[c] is not None]
        assert got.anon_vma is (have[0] if have else None)
    check(mm)


@pytest.mark.parametrize(("p", "s", "n"), list(itertools.product("-XxY", repeat=3)))
def test_merge_existing_anon_vma(p, s, n):
    """The same 64 for mprotect of a whole VMA V between P and N: V's own anon_vma is the
    source (vmg->middle)."""
    left, right = _anon_expect(p, s, n)
    mm, v = build(
        "PPVVNN",
        flags={"V": RO},
        anon={"P": ANON[p], "V": ANON[s], "N": ANON[n]},
        singular={"P": SINGULAR[p], "V": SINGULAR[s], "N": SINGULAR[n]},
    )
    got = modify(mm, v["V"], 2, 4, RW)
    assert render(mm.tree, 6, v) == _expect_sides(left, right, False)
    pieces = [s] + ([p] if left else []) + ([n] if right else [])
    have = [ANON[c] for c in pieces if ANON[c] is not None]
    assert got.anon_vma is (have[0] if have else None)
    check(mm)


@pytest.mark.parametrize(("p", "s"), list(itertools.product("-XxY", repeat=2)))
def test_merge_existing_anon_vma_partial(p, s):
    """Only the head of V changes: P may grow over it (V shrinks and keeps its anon_vma)."""
    mm, v = build(
        "PPVVVV",
        flags={"V": RO},
        anon={"P": ANON[p], "V": ANON[s]},
        singular={"P": SINGULAR[p], "V": SINGULAR[s]},
    )
    got = modify(mm, v["V"], 2, 4, RW)
    if PAIR[(p, s)]:
        assert render(mm.tree, 6, v) == "PPPPVV"
        assert got is v["P"] and pages_of(v["V"]) == (4, 6) and v["V"].pgoff == 4
        assert got.anon_vma is (ANON[p] or ANON[s]) and v["V"].anon_vma is ANON[s]
    else:
        # split at 4 (V keeps the low part, new_below = 0), then V changes
        assert render(mm.tree, 6, v) == "PPVV??"
        assert got is v["V"] and pages_of(got) == (2, 4) and got.flags == RW


# -------------------------------------------------------------- files and pgoff
F_INODE = Inode("/data")
F = OpenFile(F_INODE)
G = OpenFile(F_INODE)  # a second open() of the same file: another struct file
FILES = {"-": None, "F": F, "G": G}


@pytest.mark.parametrize(("pf", "sf", "nf"), list(itertools.product("-FG", repeat=3)))
@pytest.mark.parametrize(("p_cont", "n_cont"), list(itertools.product([True, False], repeat=2)))
def test_merge_file_and_pgoff(pf, sf, nf, p_cont, n_cont):
    """108 combinations: each side merges iff it maps the same open file and its page
    offsets continue the range's (for anonymous memory too: vm_pgoff follows the address,
    or an mremap'd VMA's old one)."""
    left = pf == sf and p_cont
    right = nf == sf and n_cont
    # the range maps file pages 100..101; P ends at 99 if contiguous, N starts at 102
    pg = {"P": 98 if p_cont else 50, "N": 102 if n_cont else 200}
    mm, v = build("PP..NN", file={"P": FILES[pf], "N": FILES[nf]}, pgoff=pg)
    got = new_range(mm, 2, 4, file=FILES[sf], pgoff=100)
    assert render(mm.tree, 6, v) == _expect_sides(left, right, True)
    if got is not None:
        assert got.pgoff == (98 if left else 100)
        assert got.file is FILES[sf]
    check(mm)

    mm, v = build(
        "PPVVNN",
        flags={"V": RO},
        file={"P": FILES[pf], "V": FILES[sf], "N": FILES[nf]},
        pgoff={**pg, "V": 100},
    )
    got = modify(mm, v["V"], 2, 4, RW)
    assert render(mm.tree, 6, v) == _expect_sides(left, right, False)
    assert got.pgoff == (98 if left else 100)


# ------------------------------------------------- predicates, one at a time
def test_predicates_of_a_new_range():
    _mm, v = build("PP..NN....")
    vmg = VmaMergeStruct(2 * PAGE, 4 * PAGE, RW, None, 2, v["P"], v["N"])
    assert vma_ops.is_mergeable_vma(vmg, False) and vma_ops.is_mergeable_vma(vmg, True)
    assert vma_ops.can_vma_merge_after(vmg) and vma_ops.can_vma_merge_before(vmg)
    assert vma_ops.can_vma_merge_left(vmg)
    assert vma_ops.can_vma_merge_right(vmg, True)
    vmg.end = 3 * PAGE  # no longer touches next
    assert vma_ops.can_vma_merge_left(vmg) and not vma_ops.can_vma_merge_right(vmg, True)
    vmg.just_expand = True
    vmg.end = 4 * PAGE
    assert not vma_ops.can_vma_merge_right(vmg, True)  # brk: never with next


def test_are_anon_vmas_compatible():
    def vma(a: AnonVma | None) -> Vma:
        return Vma(0, PAGE, RW, 0, anon_vma=a)

    assert vma_ops.are_anon_vmas_compatible(vma(None), vma(X))
    assert vma_ops.are_anon_vmas_compatible(vma(X), vma(None))
    assert vma_ops.are_anon_vmas_compatible(vma(X), vma(X))
    assert not vma_ops.are_anon_vmas_compatible(vma(X), vma(Y))


def test_brk_just_expand_leaves_next_alone():
    mm, v = build("PP..NN")
    vmg = VmaMergeStruct(2 * PAGE, 4 * PAGE, RW, None, 2, v["P"], v["N"], just_expand=True)
    assert vma_ops.vma_merge_new_range(mm.tree, vmg) is v["P"]
    assert render(mm.tree, 6, v) == "PPPPNN"


# ------------------------------------------- the tree's sorted keys vs a list
@pytest.mark.parametrize("seed", range(12))
def test_ordered_keys_match_a_sorted_list(seed):
    """``_Ordered`` edits SortedList's sublists in place (fast paths, a pair inserted in one
    slice, run deletion): the same operations on a plain sorted list give the same keys and
    searches."""
    rng = random.Random(seed)
    keys = _Ordered()
    keys.sl._reset(rng.choice([4, 8, 1000]))
    ref: list[int] = []
    for _ in range(3000):
        op = rng.random()
        if op < 0.3:
            x = rng.randrange(4000)
            if x not in ref:
                keys.add(x)
                insort(ref, x)
        elif op < 0.45:
            x = rng.randrange(4000)
            if x not in ref and x + 1 not in ref:  # two keys, none between them
                keys.add2(x, x + 1)
                insort(ref, x)
                insort(ref, x + 1)
        elif op < 0.75 and ref:
            x = rng.choice(ref)
            keys.remove(x)
            ref.remove(x)
        elif op < 0.9:
            lo = rng.randrange(4000)
            hi = lo + rng.randrange(400)
            inside = [k for k in ref if lo <= k < hi]
            assert keys.between(lo, hi) == inside
            if rng.random() < 0.4:
                assert keys.delete_between(lo, hi) == len(inside)
                ref = [k for k in ref if not lo <= k < hi]
        else:
            x = rng.randrange(4100)
            below = [k for k in ref if k <= x]
            above = [k for k in ref if k >= x]
            after = [k for k in ref if k > x]
            assert keys.floor(x) == (below[-1] if below else None)
            assert keys.ceil(x) == (above[0] if above else None)
            assert keys.higher(x) == (after[0] if after else None)
        assert list(keys.sl) == ref
        keys.sl._check()  # SortedList's own invariants, balance included


# -------------------------------------------------------------------- layering
VMA_CORE = ["vma.py", "tree.py", "vma_internal.py", "vma_ops.py"]
ALLOWED = {
    "vmsim.constants",
    "vmsim.errors",
    "vmsim.mm.flags",
    "vmsim.mm.vma",
    "vmsim.mm.tree",
    "vmsim.mm.vma_internal",
    "vmsim.mm",  # "from vmsim.mm import vma_ops" style, checked by name below
}


@pytest.mark.parametrize("module", VMA_CORE)
def test_vma_core_imports_nothing_else(module):
    """mm/vma.h "includes nothing so that the VMA logic is testable in user space": the VMA
    core imports constants, flags, errors and itself, never hw/, phys/ or the fault code
    (at run time: an annotation may name a page-level type under ``if TYPE_CHECKING:``)."""
    src = Path(__file__).parents[2] / "src" / "vmsim" / "mm" / module
    tree = ast.parse(src.read_text())
    # Imports under ``if TYPE_CHECKING:`` never run (annotations only): leave them out.
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vmsim"):
            found.add(node.module)
            if node.module == "vmsim.mm":
                assert {a.name for a in node.names} <= {"vma", "tree", "vma_internal", "flags"}
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("vmsim"))
    assert found <= ALLOWED, found - ALLOWED


@pytest.mark.parametrize("seed", range(8))
def test_random_operations_keep_the_tree_and_free_space_consistent(seed):
    """mmap-like inserts and merges, mprotect-like modifies and munmaps at random over 64
    pages, against a page-by-page model: the pages mapped and each page's flags agree, and
    the tree's invariants hold after every step."""
    rng = random.Random(seed)
    mm = StubMm()
    pages: dict[int, int] = {}  # page -> flags, the reference
    flag_choices = [RW, RO, RW | VM_MAYBE_GUARD]
    for _ in range(400):
        op = rng.random()
        a = rng.randrange(64)
        b = min(64, a + rng.randint(1, 12))
        if op < 0.35:  # a new mapping over free pages only, merged where the rules allow
            if any(p in pages for p in range(a, b)):
                continue
            flags = rng.choice(flag_choices)
            if new_range(mm, a, b, flags=flags) is None:
                mm.tree.insert_new(Vma(a * PAGE, b * PAGE, flags, a))
            got = mm.tree.lookup(a * PAGE)
            assert got is not None
            for p in range(a, b):
                pages[p] = flags
            # a merge keeps the survivor's sticky flags: read them back for the whole VMA
            for p in range(got.start // PAGE, got.end // PAGE):
                pages[p] = got.flags
        elif op < 0.7:  # a flag change of a mapped run (like mprotect of one VMA's part)
            vma = mm.tree.lookup(a * PAGE)
            if vma is None:
                continue
            b = min(b, vma.end // PAGE)
            flags = rng.choice([RW, RO])
            got = modify(mm, vma, a, b, flags)
            for p in range(got.start // PAGE, got.end // PAGE):
                pages[p] = got.flags
            assert got.start <= a * PAGE and got.end >= b * PAGE
        else:
            vma_ops.do_vmi_munmap(mm, a * PAGE, b * PAGE)
            for p in range(a, b):
                pages.pop(p, None)
        check(mm)
        mapped = {}
        for vma in mm.tree:
            for p in range(vma.start // PAGE, vma.end // PAGE):
                mapped[p] = vma.flags & ~VM_MAYBE_GUARD
        assert mapped == {p: f & ~VM_MAYBE_GUARD for p, f in pages.items()}


def test_deepcopy_of_a_tree_copies_every_vma_once() -> None:
    """copy.deepcopy() of a VmaTree (a replay's snapshot): the copy has equal VMAs, free
    ranges and lookups, shares no VMA with the original, keeps a file or anon_vma shared
    by two VMAs one object (copied), and changes to one never show in the other."""
    import copy

    a = AnonVma()
    f = OpenFile(Inode("/f"))
    mm, v = build("AA.BBB.CC", anon={"A": a, "C": a}, file={"B": f}, pgoff={"B": 3})
    v["B"].name = None
    v["B"].swap_ra = (1, 2, 3)
    elsewhere = [v["A"]]  # a VMA that something besides the tree points at
    tree = mm.tree
    dup, dup_elsewhere = copy.deepcopy((tree, elsewhere))
    assert [(x.start, x.end, x.flags, x.pgoff, x.swap_ra) for x in dup] == [
        (x.start, x.end, x.flags, x.pgoff, x.swap_ra) for x in tree
    ]
    assert dup.free.ranges() == tree.free.ranges()
    assert not {id(x) for x in dup} & {id(x) for x in tree}
    a0, b0, c0 = list(dup)
    assert dup_elsewhere[0] is a0
    assert a0.anon_vma is c0.anon_vma and a0.anon_vma is not a
    assert b0.file is not f and b0.file is not None and b0.file.inode.path == "/f"
    # the copy goes its own way
    vma_ops.split_vma_nocheck(dup, b0, 5 * PAGE)
    dup.remove_unmapped(c0)
    assert render(dup, 9) == "AA.BBC..."
    assert render(tree, 9) == "AA.BBB.CC"
    assert dup.free.ranges()[0] == (2 * PAGE, 3 * PAGE)
    assert dup.free.ranges()[1][0] == 6 * PAGE
    assert tree.free.ranges()[1] == (6 * PAGE, 7 * PAGE)
