"""Where mmap(NULL) and hints land: spec §4 (x86-64 top-down, THP alignment, guard gaps)."""

from __future__ import annotations

import pytest
from layout import PAGE, RW

from vmsim import MAP_ANONYMOUS, MAP_FIXED, MAP_GROWSDOWN, MAP_PRIVATE, PROT_READ

ANON = MAP_PRIVATE | MAP_ANONYMOUS
MIB = 1 << 20
PMD = 2 * MIB


def test_mappings_stack_downwards(p):
    a = p.mmap(0, 4 * PAGE, RW, ANON)
    b = p.mmap(0, 3 * PAGE, PROT_READ, ANON)
    c = p.mmap(0, PAGE, RW | 0x4, ANON)
    assert b == a - 3 * PAGE
    assert c == b - PAGE


def test_holes_are_reused_top_first(p):
    a = p.mmap(0, 4 * PAGE, RW, ANON)
    b = p.mmap(0, 4 * PAGE, PROT_READ, ANON)
    c = p.mmap(0, 4 * PAGE, RW, ANON)
    assert (b, c) == (a - 4 * PAGE, a - 8 * PAGE)
    p.munmap(b, 4 * PAGE)
    p.munmap(c + PAGE, 2 * PAGE)  # a lower, 2-page hole
    assert p.mmap(0, 2 * PAGE, PROT_READ | 0x4, ANON) == a - 2 * PAGE  # top of the higher hole
    assert p.mmap(0, PAGE, PROT_READ | 0x4, ANON) == a - 3 * PAGE
    assert p.mmap(0, PAGE, PROT_READ | 0x4, ANON) == a - 4 * PAGE
    assert p.mmap(0, 2 * PAGE, PROT_READ | 0x4, ANON) == c + PAGE  # the lower hole
    assert p.mmap(0, 5 * PAGE, PROT_READ | 0x4, ANON) == c - 5 * PAGE  # nothing fits: below


def test_thp_alignment_for_2mib_multiple_private_anon(p):
    a = p.mmap(0, PAGE, RW, ANON)
    b = p.mmap(0, PMD, RW, ANON)
    assert b % PMD == 0
    assert b == (a - PMD) & ~(PMD - 1)
    c = p.mmap(0, 2 * PMD, PROT_READ, ANON)
    assert c == (b - 2 * PMD) & ~(PMD - 1)


def test_no_thp_alignment_for_3mib(p):
    a = p.mmap(0, PAGE, RW, ANON)
    b = p.mmap(0, 3 * MIB, RW, ANON)
    assert b == a - 3 * MIB


def test_thp_skips_a_hole_that_fits_len_but_not_len_plus_2mib(p):
    top = p.mmap(0, PAGE, RW, ANON)
    base = (top - 8 * PMD) & ~(PMD - 1)
    p.mmap(base, 4 * PMD, PROT_READ, ANON | MAP_FIXED)
    p.munmap(base + PMD, PMD)  # an aligned 2 MiB hole: fits len, not len + 2 MiB
    p.mmap(base + 4 * PMD, top - (base + 4 * PMD), PROT_READ | 0x4, ANON | MAP_FIXED)
    b = p.mmap(0, PMD, RW, ANON)
    assert b != base + PMD
    assert b == (base - PMD) & ~(PMD - 1)
    c = p.mmap(0, PMD - PAGE, RW, ANON)  # not a 2 MiB multiple: the hole is used
    assert c == base + 2 * PMD - (PMD - PAGE)


def test_free_hint_is_used(p):
    hint = 0x2000_0000
    assert p.mmap(hint, 4 * PAGE, RW, ANON) == hint


def test_occupied_hint_falls_back_to_top_down(p):
    a = p.mmap(0, PAGE, RW, ANON)
    hint = 0x2000_0000
    p.mmap(hint, 4 * PAGE, RW, ANON | MAP_FIXED)
    assert p.mmap(hint + PAGE, PAGE, PROT_READ, ANON) == a - PAGE


def test_partly_occupied_hint_falls_back_to_top_down(p):
    a = p.mmap(0, PAGE, RW, ANON)
    hint = 0x2000_0000
    p.mmap(hint + 2 * PAGE, PAGE, RW, ANON | MAP_FIXED)
    assert p.mmap(hint, 4 * PAGE, PROT_READ, ANON) == a - 4 * PAGE


@pytest.mark.parametrize(
    ("below", "accepted"),
    [(256 * PAGE, False), (256 * PAGE + PAGE, True), (PAGE, False), (300 * PAGE, True)],
)
def test_hint_respects_stack_guard_gap(p, below, accepted):
    s = 0x3000_0000
    a = p.mmap(0, PAGE, RW, ANON)
    p.mmap(s, 4 * PAGE, RW, ANON | MAP_FIXED | MAP_GROWSDOWN)
    got = p.mmap(s - below, PAGE, PROT_READ, ANON)
    assert got == (s - below if accepted else a - PAGE)


def test_map_fixed_inside_guard_gap_is_allowed(p):
    s = 0x3000_0000
    p.mmap(s, 4 * PAGE, RW, ANON | MAP_FIXED | MAP_GROWSDOWN)
    assert p.mmap(s - PAGE, PAGE, PROT_READ, ANON | MAP_FIXED) == s - PAGE


def test_top_down_search_keeps_guard_gap_below_growsdown(p):
    a = p.mmap(0, PAGE, RW, ANON)
    p.munmap(a, PAGE)
    # a GROWSDOWN VMA right at the top: the next search must stay 1 MiB below it
    g = p.mmap(a, PAGE, RW, ANON | MAP_FIXED | MAP_GROWSDOWN)
    assert p.mmap(0, PAGE, PROT_READ, ANON) == g - 256 * PAGE - PAGE
