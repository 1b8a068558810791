"""The max_map_count threshold table (spec §1), measured by one procedure on any side.

The procedure follows spec §8: one big ``PROT_READ|MAP_NORESERVE`` region whose every other page
is made ``PROT_NONE`` fills the process (+2 VMAs per hole); exact counts are reached with isolated
one-page mappings (+1 each, and mmap only fails at M+1).  For every operation row and every count
``c`` in M-6..M+1, the row's target VMAs are built at a fresh private address, the process is
topped up to exactly ``c`` VMAs, the operation runs, ``map_count`` is read, and the target range is
unmapped again.  The same code drives the live kernel (``live.LiveChild``) and vmsim
(``harness.SimTarget``), so the two tables can be compared cell by cell.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .live import Outcome

P = 4096
FILL_BASE = 0x300000000000
ADJ_BASE = 0x310000000000
TGT_BASE = 0x320000000000
TGT_STRIDE = 1024 * P

R, RW, RX = 1, 3, 5
PRIV_ANON = 0x02 | 0x20
FIXED, NOREPLACE, NORESERVE = 0x10, 0x100000, 0x4000
MAYMOVE, MFIXED, DONTUNMAP = 1, 2, 4
MADV_DONTNEED, MADV_DONTFORK, MADV_GUARD_INSTALL = 4, 10, 102

COLUMNS = list(range(-6, 2))  # c - M


def col_name(d: int) -> str:
    return "M" if d == 0 else f"M{d:+d}"


class Filler:
    """Moves a process's map_count to an exact value with known +2/+1/-1/-2 steps."""

    def __init__(self, side: Any, max_count: int) -> None:
        self.side = side
        self.M = max_count
        self.holes = 0
        self.adjust: list[int] = []
        self.next_adjust = 0
        self.cur = 0
        self.region_pages = 2 * max_count
        out = side.mmap(FILL_BASE, self.region_pages * P, R, PRIV_ANON | NOREPLACE | NORESERVE)
        assert out.err is None, f"fill region: {out}"
        self.count()

    def _hole(self, k: int) -> int:
        return FILL_BASE + (2 * k + 1) * P

    def _calls(self, calls: list[tuple[str, tuple[int, ...]]]) -> list[Outcome]:
        side = self.side
        if hasattr(side, "batch"):
            res = side.batch(calls)
            return [Outcome(ret=r) if r != -1 else Outcome(err=str(e)) for r, e in res]
        return [getattr(side, name)(*args) for name, args in calls]

    def count(self) -> int:
        """Read map_count (expensive on the kernel side: ~30 ms at 65k VMAs) and remember it."""
        self.cur = int(self.side.map_count)
        return self.cur

    def set_count(self, c: int, verify: bool = True) -> None:
        """Reach exactly ``c`` from the tracked count ``self.cur`` with holes and adjust pages;
        with ``verify``, read the real count at the end and correct until it is ``c``."""
        while True:
            self._step_to(c)
            if not verify or self.count() == c:
                return

    def _step_to(self, c: int) -> None:
        cur = self.cur
        while cur != c:
            if cur < c:
                d = c - cur
                if d >= 4 and cur + 2 <= self.M - 2:
                    k = max(1, min(d // 2 - 1, (self.M - 2 - cur) // 2))
                    calls = [("mprotect", (self._hole(self.holes + i), P, 0)) for i in range(k)]
                    bad = [r for r in self._calls(calls) if r.err]
                    assert not bad, f"adding holes failed: {bad[:3]}"
                    self.holes += k
                    cur += 2 * k
                else:
                    addr = ADJ_BASE + 2 * P * self.next_adjust
                    self.next_adjust += 1
                    out = self.side.mmap(addr, P, RW, PRIV_ANON | NOREPLACE)
                    assert out.err is None, f"adjust mapping at count {cur}: {out}"
                    self.adjust.append(addr)
                    cur += 1
            else:
                d = cur - c
                if self.adjust and (d % 2 == 1 or not self.holes):
                    out = self.side.munmap(self.adjust.pop(), P)
                    assert out.err is None, f"dropping adjust mapping: {out}"
                    cur -= 1
                elif self.holes:
                    k = max(1, min(d // 2, self.holes))
                    calls = [("mprotect", (self._hole(self.holes - 1 - i), P, R)) for i in range(k)]
                    assert not [r for r in self._calls(calls) if r.err], "removing holes failed"
                    self.holes -= k
                    cur -= 2 * k
                else:
                    raise AssertionError(f"cannot lower map_count from {cur} to {c}")
        self.cur = cur


@dataclass(frozen=True)
class Row:
    """One operation of the table: ``setup`` builds the target VMAs at ``t``, ``op`` is measured."""

    name: str
    setup: Callable[[Any, int], None]
    op: Callable[[Any, int], Outcome]
    # extra ranges (offsets from t, in pages) cleanup must unmap besides [t, t+64p)
    kind: str = "call"


def _mm(side: Any, addr: int, pages: int, prot: int = RW, extra: int = 0) -> None:
    out = side.mmap(addr, pages * P, prot, PRIV_ANON | NOREPLACE | extra)
    assert out.err is None and out.ret == addr, f"setup mmap {addr:#x}: {out}"


def _ok(out: Outcome) -> None:
    assert out.err is None, f"setup call failed: {out}"


def _one(side: Any, t: int) -> None:
    _mm(side, t, 8)


def _two(side: Any, t: int) -> None:
    _mm(side, t, 4)
    _mm(side, t + 4 * P, 4, R)


def _three(side: Any, t: int) -> None:
    _mm(side, t, 4)
    _mm(side, t + 4 * P, 4, R)
    _mm(side, t + 8 * P, 4)


def _locked(side: Any, t: int) -> None:
    _mm(side, t, 8)
    _ok(side.mlock(t, 8 * P))


def _nothing(side: Any, t: int) -> None:
    pass


def _neighbour(attr: str) -> Callable[[Any, int], None]:
    """A rw [0,4) and B [4,8) that already has the attribute the op will set on A's tail."""

    def setup(side: Any, t: int) -> None:
        _mm(side, t, 4)
        _mm(side, t + 4 * P, 4)
        if attr == "mprotect":
            _ok(side.mprotect(t + 4 * P, 4 * P, R))
        elif attr == "mlock":
            _ok(side.mlock(t + 4 * P, 4 * P))
        elif attr == "munlock":
            _ok(side.mlock(t, 4 * P))
        elif attr == "mseal":
            _ok(side.mseal(t + 4 * P, 4 * P, 0))
        elif attr == "madvise":
            _ok(side.madvise(t + 4 * P, 4 * P, MADV_DONTFORK))

    return setup


ATTR_OPS: dict[str, Callable[[Any, int, int], Outcome]] = {
    "mprotect": lambda s, a, n: s.mprotect(a, n, R),
    "mlock": lambda s, a, n: s.mlock(a, n),
    "munlock": lambda s, a, n: s.munlock(a, n),
    "mseal": lambda s, a, n: s.mseal(a, n, 0),
    "madvise(DONTFORK)": lambda s, a, n: s.madvise(a, n, MADV_DONTFORK),
}


def _attr_rows() -> list[Row]:
    rows = []
    for name, fn in ATTR_OPS.items():
        base = name.split("(")[0]
        setup = _locked if base == "munlock" else _one

        def mid(s: Any, t: int, fn: Any = fn) -> Outcome:
            return fn(s, t + 2 * P, 2 * P)

        def edge(s: Any, t: int, fn: Any = fn) -> Outcome:
            return fn(s, t, 2 * P)

        def whole(s: Any, t: int, fn: Any = fn) -> Outcome:
            return fn(s, t, 8 * P)

        def merge(s: Any, t: int, fn: Any = fn) -> Outcome:
            return fn(s, t + 2 * P, 2 * P)

        rows += [
            Row(f"{name} middle (+2)", setup, mid),
            Row(f"{name} touching one end (+1)", setup, edge),
            Row(f"{name} whole VMA", setup, whole),
            Row(f"{name} tail merges into neighbour", _neighbour(base), merge),
        ]
    rows.append(
        Row(
            "mprotect middle, flags unchanged",
            _one,
            lambda s, t: s.mprotect(t + 2 * P, 2 * P, RW),
        )
    )
    return rows


def _brk_setup(side: Any, t: int) -> None:
    pass


def _blocked(side: Any, t: int) -> None:
    _mm(side, t, 4)
    _mm(side, t + 4 * P, 1, R)


def rows() -> list[Row]:
    return [
        Row(
            "mmap new VMA (no merge)",
            _nothing,
            lambda s, t: s.mmap(t, P, RW, PRIV_ANON | NOREPLACE),
        ),
        Row(
            "mmap that merges with a neighbour",
            lambda s, t: _mm(s, t, 1),
            lambda s, t: s.mmap(t + P, P, RW, PRIV_ANON | NOREPLACE),
        ),
        Row(
            "MAP_FIXED over middle of 1 VMA (+2)",
            _one,
            lambda s, t: s.mmap(t + 2 * P, 2 * P, R, PRIV_ANON | FIXED),
        ),
        Row(
            "MAP_FIXED over edge of a VMA",
            _one,
            lambda s, t: s.mmap(t, 2 * P, R, PRIV_ANON | FIXED),
        ),
        Row(
            "MAP_FIXED over 2 VMAs",
            _two,
            lambda s, t: s.mmap(t + 2 * P, 4 * P, RX, PRIV_ANON | FIXED),
        ),
        Row("munmap strictly inside 1 VMA (+1)", _one, lambda s, t: s.munmap(t + 2 * P, 2 * P)),
        Row("munmap edge", _one, lambda s, t: s.munmap(t, 2 * P)),
        Row("munmap whole VMA", _one, lambda s, t: s.munmap(t, 8 * P)),
        Row("munmap A-mid..B-mid", _two, lambda s, t: s.munmap(t + 2 * P, 4 * P)),
        Row("munmap A-mid..C-mid", _three, lambda s, t: s.munmap(t + 2 * P, 8 * P)),
        *_attr_rows(),
        Row(
            "madvise DONTNEED middle", _one, lambda s, t: s.madvise(t + 2 * P, 2 * P, MADV_DONTNEED)
        ),
        Row(
            "madvise GUARD_INSTALL middle",
            _one,
            lambda s, t: s.madvise(t + 2 * P, 2 * P, MADV_GUARD_INSTALL),
        ),
        Row("mremap shrink (tail)", _one, lambda s, t: s.mremap(t, 8 * P, 4 * P, 0, 0)),
        Row(
            "mremap grow in place",
            lambda s, t: _mm(s, t, 4),
            lambda s, t: s.mremap(t, 4 * P, 8 * P, 0, 0),
        ),
        Row("mremap shrink, hole inside (+1)", _one, lambda s, t: s.mremap(t, 4 * P, 2 * P, 0, 0)),
        Row(
            "mremap MAYMOVE grow that must move",
            _blocked,
            lambda s, t: s.mremap(t, 4 * P, 8 * P, MAYMOVE, 0),
        ),
        Row(
            "mremap MREMAP_FIXED",
            lambda s, t: _mm(s, t, 4),
            lambda s, t: s.mremap(t, 4 * P, 4 * P, MAYMOVE | MFIXED, t + 512 * P),
        ),
        Row(
            "mremap MREMAP_DONTUNMAP (+1)",
            lambda s, t: _mm(s, t, 4),
            lambda s, t: s.mremap(t, 4 * P, 4 * P, MAYMOVE | DONTUNMAP | MFIXED, t + 512 * P),
        ),
        Row("brk grow (extends [heap])", _brk_setup, lambda s, t: s.brk(t), kind="brk"),
    ]


@dataclass(frozen=True)
class Cell:
    result: str  # "ok", "old brk", errno name
    after: int  # map_count after the call
    c: int

    def show(self, M: int) -> str:
        if self.after == self.c:
            return self.result
        d = self.after - M
        return f"{self.result}→{col_name(d)}"


def measure(side: Any, max_count: int, only: list[str] | None = None) -> dict[str, dict[int, Cell]]:
    """Run every row at every column on ``side``; returns table[row][c - M]."""
    M = max_count
    fill = Filler(side, M)
    table: dict[str, dict[int, Cell]] = {}
    cell_no = 0
    for row in rows():
        if only and row.name not in only:
            continue
        table[row.name] = {}
        setup_delta: int | None = None
        for d in COLUMNS:
            c = M + d
            t = TGT_BASE + cell_no * TGT_STRIDE
            cell_no += 1
            low = M - 16
            fill.set_count(low, verify=False)
            row.setup(side, t)
            if setup_delta is None:
                setup_delta = fill.count() - low
            fill.cur = low + setup_delta
            fill.set_count(c)  # verified: the cell is only meaningful at exactly c
            if row.kind == "brk":
                old = side.brk(0).ret
                out = side.brk(old + P)
                after = fill.count()
                result = (
                    "ok" if out.ret == old + P else ("old brk" if out.ret == old else f"?{out}")
                )
                back = side.brk(old)
                assert back.ret == old, f"brk cleanup: {back}"
            else:
                out = row.op(side, t)
                after = fill.count()
                result = out.err or "ok"
                side.munmap(t, 1024 * P)  # also the mremap destinations at t+512p
                moved = out.err is None and isinstance(out.ret, int) and out.ret not in (0, t)
                if moved and not (t <= out.ret < t + TGT_STRIDE):  # type: ignore[operator]
                    side.munmap(out.ret, 8 * P)
            fill.count()
            table[row.name][d] = Cell(result, after, c)
    return table


def render(table: dict[str, dict[int, Cell]], M: int, title: str) -> str:
    width = max(len(n) for n in table) + 2
    head = "operation".ljust(width) + "".join(f"{col_name(d):>12}" for d in COLUMNS)
    lines = [title, head, "-" * len(head)]
    for name, cells in table.items():
        lines.append(name.ljust(width) + "".join(f"{cells[d].show(M):>12}" for d in COLUMNS))
    return "\n".join(lines)


def expected_from_spec(name: str, d: int) -> tuple[str, int]:
    """(result, count after - c) that spec §1 predicts for row ``name`` at c = M + d."""
    fail_attr = "EAGAIN" if name.startswith("madvise(") else "ENOMEM"
    if name == "mmap new VMA (no merge)":
        return ("ok", 1) if d <= 0 else ("ENOMEM", 0)
    if name == "mmap that merges with a neighbour":
        return ("ok", 0) if d <= 0 else ("ENOMEM", 0)
    if name == "MAP_FIXED over middle of 1 VMA (+2)":
        return ("ok", 2) if d <= -1 else ("ENOMEM", 0)
    if name in ("MAP_FIXED over edge of a VMA", "MAP_FIXED over 2 VMAs"):
        return ("ok", 1) if d <= 0 else ("ENOMEM", 0)
    if name == "munmap strictly inside 1 VMA (+1)":
        return ("ok", 1) if d <= -1 else ("ENOMEM", 0)
    if name in ("munmap edge", "munmap whole VMA"):
        return ("ok", 0 if name == "munmap edge" else -1)
    if name == "munmap A-mid..B-mid":
        return ("ok", 0)
    if name == "munmap A-mid..C-mid":
        return ("ok", -1)
    if name.endswith("middle (+2)"):
        if d <= -2:
            return ("ok", 2)
        return (fail_attr, 1) if d == -1 else (fail_attr, 0)
    if name.endswith("touching one end (+1)"):
        return ("ok", 1) if d <= -1 else (fail_attr, 0)
    if name.endswith("whole VMA") or name.endswith("flags unchanged"):
        return ("ok", 0)
    if name.endswith("tail merges into neighbour"):
        return ("ok", 0)
    if name.startswith("madvise DONTNEED") or name.startswith("madvise GUARD"):
        return ("ok", 0)
    if name in ("mremap shrink (tail)", "mremap grow in place"):
        return ("ok", 0)
    if name == "mremap shrink, hole inside (+1)":
        return ("ok", 1) if d <= -1 else ("ENOMEM", 0)
    if name == "mremap MAYMOVE grow that must move":
        return ("ok", 0) if d <= -4 else ("ENOMEM", 0)
    if name == "mremap MREMAP_FIXED":
        return ("ok", 0) if d <= -6 else ("ENOMEM", 0)
    if name == "mremap MREMAP_DONTUNMAP (+1)":
        return ("ok", 1) if d <= -6 else ("ENOMEM", 0)
    if name == "brk grow (extends [heap])":
        return ("ok", 0) if d <= 0 else ("old brk", 0)
    raise KeyError(name)
