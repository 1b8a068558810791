"""PageTables against a plain dict of leaves (STYLE.md habits 3 and 5).

The model is ``{vaddr: (entry, level)}``, one item per leaf, and knows nothing of tables. From
it follow what the radix tree must do: which sets are refused (a large leaf in the way, or
leaves under the slot of a large one), what ``clear_range`` returns, and, since tables are
freed as soon as they empty, exactly which table pages exist: the root plus one table per
level between each leaf and the root.

Addresses are drawn from a few indices per level (0, 1, 2 and 511, 255 at the top) so that
leaves share tables, collide, and sit at table edges.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vmsim.hw.pagetable import Mapping, PageTables, level_shift, level_size
from vmsim.hw.pte import make_pte, swp_entry

index = st.sampled_from([0, 1, 2, 511])
top_index = st.sampled_from([0, 1, 255])
leaf_level = st.sampled_from([1, 1, 1, 2, 2, 3])


def entry_for(level: int, pfn: int, swapped: bool) -> int:
    if swapped:
        return swp_entry(1, pfn)
    return make_pte(
        pfn << (9 * (level - 1)),
        present=True,
        writable=True,
        user=True,
        nx=False,
        accessed=False,
        dirty=False,
        global_=False,
        huge=level > 1,
    )


class PageTableMachine(RuleBasedStateMachine):
    LEVELS = 4

    def __init__(self) -> None:
        super().__init__()
        self.live: set[int] = set()
        self.next_pfn = 0
        self.pt = PageTables(self.LEVELS, alloc_table=self._alloc, free_table=self._free)
        self.model: dict[int, tuple[int, int]] = {}
        self.top = 1 << (12 + 9 * self.LEVELS - 1)  # end of the user half

    def _alloc(self) -> int:
        self.next_pfn += 1
        self.live.add(self.next_pfn)
        return self.next_pfn

    def _free(self, pfn: int) -> None:
        self.live.remove(pfn)  # KeyError on a double free

    def addr(self, idx: list[int], level: int) -> int:
        """Compose an address from top-first indices, zeroing those below ``level``."""
        va = 0
        for lv, i in zip(range(self.LEVELS, 0, -1), idx, strict=True):
            if lv >= level:
                va |= i << level_shift(lv)
        return va

    def covering(self, va: int) -> int | None:
        for start, (_, lv) in self.model.items():
            if start <= va < start + level_size(lv):
                return start
        return None

    def indices(self) -> st.SearchStrategy[list[int]]:
        return st.tuples(top_index, *[index] * (self.LEVELS - 1)).map(list)

    # --- rules ----------------------------------------------------------------------
    @rule(data=st.data(), level=leaf_level, pfn=st.integers(1, 1000), swapped=st.booleans())
    def set_leaf(self, data: st.DataObject, level: int, pfn: int, swapped: bool) -> None:
        va = self.addr(data.draw(self.indices()), level)
        entry = entry_for(level, pfn, swapped)
        size = level_size(level)
        cover = self.covering(va)
        blocked = cover is not None and self.model[cover][1] > level
        below = any(va <= s < va + size and lv < level for s, (_, lv) in self.model.items())
        try:
            old = self.pt.set(va, entry, level)
        except ValueError:
            assert blocked or below, f"set({va:#x}, level {level}) refused"
            return
        assert not blocked and not below, f"set({va:#x}, level {level}) accepted"
        assert old == (self.model[va][0] if va in self.model else 0)
        self.model[va] = (entry, level)

    @rule(data=st.data(), level=leaf_level)
    def clear(self, data: st.DataObject, level: int) -> None:
        va = self.addr(data.draw(self.indices()), level) + data.draw(st.integers(0, 4095))
        start = self.covering(va)
        expected = 0 if start is None else self.model.pop(start)[0]
        assert self.pt.clear(va) == expected

    @rule(data=st.data(), la=leaf_level, lb=leaf_level)
    def clear_range(self, data: st.DataObject, la: int, lb: int) -> None:
        a = self.addr(data.draw(self.indices()), la)
        b = self.addr(data.draw(self.indices()), lb)
        a, b = min(a, b), min(max(a, b) + level_size(lb), self.top)
        straddles = False
        for edge in (a, b - 1):
            s = self.covering(edge)
            if s is not None:
                size = level_size(self.model[s][1])
                straddles |= s < a or s + size > b
        try:
            out = self.pt.clear_range(a, b)
        except ValueError:
            assert straddles, f"clear_range({a:#x}, {b:#x}) refused"
            return
        assert not straddles, f"clear_range({a:#x}, {b:#x}) accepted"
        gone = sorted(s for s in self.model if a <= s < b)
        assert out == [Mapping(s, *self.model[s]) for s in gone]
        for s in gone:
            del self.model[s]

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def get_inside_a_leaf(self, data: st.DataObject) -> None:
        start = data.draw(st.sampled_from(sorted(self.model)))
        entry, lv = self.model[start]
        off = data.draw(st.integers(0, level_size(lv) - 1))
        leaf = self.pt.get(start + off)
        assert leaf is not None and (leaf.entry, leaf.level) == (entry, lv)

    # --- invariants -----------------------------------------------------------------
    @invariant()
    def structure(self) -> None:
        self.pt.check_invariants()

    @invariant()
    def leaves_equal_the_model(self) -> None:
        got = list(self.pt.iter_leaves(0, self.top))
        assert got == [Mapping(s, e, lv) for s, (e, lv) in sorted(self.model.items())]
        present = [m.vaddr for m in self.pt.iter_present(0, self.top)]
        assert present == sorted(s for s, (e, _) in self.model.items() if e & 1)
        assert len(self.pt) == len(self.model)

    @invariant()
    def exactly_the_needed_tables_exist(self) -> None:
        needed = {(self.LEVELS, 0)}
        for start, (_, lv) in self.model.items():
            for table_level in range(lv, self.LEVELS):
                needed.add((table_level, start >> level_shift(table_level + 1)))
        assert self.pt.table_pages == len(needed)
        assert len(self.live) == len(needed)

    def teardown(self) -> None:
        self.pt.destroy()
        assert self.live == set(), "destroy() leaked table frames"


class FiveLevelMachine(PageTableMachine):
    LEVELS = 5


_settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PageTableMachine.TestCase.settings = _settings
FiveLevelMachine.TestCase.settings = _settings
TestPageTableMachine = PageTableMachine.TestCase
TestFiveLevelMachine = FiveLevelMachine.TestCase
