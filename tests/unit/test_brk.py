"""brk(2) on the "linux" layout (kernel-verified with a C program calling SYS_brk directly)."""

from __future__ import annotations

import pytest
from layout import PAGE, parse_maps

import vmsim
from vmsim import MAP_ANONYMOUS, MAP_FIXED_NOREPLACE, MAP_GROWSDOWN, MAP_PRIVATE, PROT_READ

NOREPLACE = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE


def up(x: int) -> int:
    return (x + PAGE - 1) & ~(PAGE - 1)


def heap_lines(q) -> list[tuple[int, int]]:
    return [(v.start, v.end) for v in parse_maps(q.maps()) if v.name == "[heap]"]


@pytest.fixture
def q():
    return vmsim.Machine().spawn(layout="linux")


@pytest.fixture
def start(q) -> int:
    """start_brk: where the layout's [heap] begins."""
    ((s, _),) = heap_lines(q)
    return s


def test_brk_zero_reports_the_break(q, start):
    b = q.brk(0)
    assert heap_lines(q) == [(start, up(b))]


def test_grow_returns_the_exact_unaligned_value(q, start):
    b = q.brk(0)
    n = q.map_count
    assert q.brk(b + 4 * PAGE + 5) == b + 4 * PAGE + 5
    assert q.brk(0) == b + 4 * PAGE + 5
    assert heap_lines(q) == [(start, up(b + 4 * PAGE + 5))]  # one VMA, extended
    assert q.map_count == n


def test_shrink_unmaps_the_tail_and_regrown_memory_is_zero(q, start):
    b = q.brk(0)
    q.brk(start + 3 * PAGE)
    q.write(start + 2 * PAGE, b"heap")
    assert q.brk(start + 2 * PAGE) == start + 2 * PAGE
    assert heap_lines(q) == [(start, start + 2 * PAGE)]
    assert q.brk(start + 3 * PAGE) == start + 3 * PAGE
    assert q.read(start + 2 * PAGE, 4) == bytes(4)
    assert b != 0


def test_shrink_to_start_removes_the_heap_vma(q, start):
    n = q.map_count
    assert q.brk(start) == start
    assert heap_lines(q) == []
    assert q.map_count == n - 1
    assert q.brk(start + 1) == start + 1
    assert heap_lines(q) == [(start, start + PAGE)]
    assert q.map_count == n


def test_below_start_returns_current_break(q, start):
    b = q.brk(0)
    assert q.brk(start - 1000 * PAGE) == b
    assert q.brk(start - 1) == b
    assert q.brk(0) == b


def test_grow_needs_one_free_page_below_the_next_mapping(q, start):
    q.brk(start + 5 * PAGE)
    top = start + 5 * PAGE
    q.mmap(top + 2 * PAGE, PAGE, PROT_READ, NOREPLACE)
    assert q.brk(top + PAGE) == top + PAGE  # ends one page below the mapping: ok
    assert q.brk(top + 2 * PAGE) == top + PAGE  # would abut it: refused, old break
    assert q.brk(top + 2 * PAGE - 1) == top + PAGE
    assert heap_lines(q) == [(start, top + PAGE)]


def test_grow_respects_stack_guard_gap_below_growsdown(q, start):
    b = q.brk(0)
    g = up(b) + 300 * PAGE
    q.mmap(g, PAGE, PROT_READ | 0x2, NOREPLACE | MAP_GROWSDOWN)
    assert q.brk(g - 256 * PAGE) == b
    assert q.brk(g - 256 * PAGE - 1) == b
    assert q.brk(g - 257 * PAGE) == g - 257 * PAGE
    assert heap_lines(q) == [(start, g - 257 * PAGE)]
