"""``vmsim.memtrace.cost.access_cycles``: one access priced as ``cost()`` prices a trace.
Expected cycles by hand from Skylake's published latencies (7-cpu.com: L1 4, L2 12, L3 42,
RAM about 250; STLB hit 9), and the sum over accesses equal to ``cost()`` of their counters."""

from __future__ import annotations

import random

import pytest

from vmsim.memtrace.cost import access_cycles, cost
from vmsim.memtrace.cpus import skylake
from vmsim.memtrace.records import Counters


def test_by_hand() -> None:
    cpu = skylake()
    assert access_cycles(cpu, "L1", data_level=0) == 0
    assert access_cycles(cpu, "STLB", data_level=0) == 9
    assert access_cycles(cpu, "STLB", data_level=1) == 9 + 12
    assert access_cycles(cpu, None, [0], 0) == 9 + 4  # PDE cache hit: only the PTE read
    assert access_cycles(cpu, None, [0, 1, 2, 3], 2) == 9 + 4 + 12 + 42 + 250 + 42
    assert access_cycles(cpu, None, [1], None) == 9 + 12  # an instruction fetch: no data line


def test_sum_of_accesses_is_the_trace_cost() -> None:
    cpu = skylake()
    rng = random.Random(3)
    c = Counters()
    walk_lv = [0, 0, 0, 0]
    data_lv = [0, 0, 0, 0]
    total = 0
    for _ in range(500):
        tlb = rng.choice(["L1", "STLB", None])
        refs = [rng.randrange(4) for _ in range(rng.randint(1, 4))] if tlb is None else []
        data = rng.randrange(4)
        total += access_cycles(cpu, tlb, refs, data)
        c.stlb_hits += tlb == "STLB"
        c.walks += tlb is None
        for lv in refs:
            walk_lv[lv] += 1
        data_lv[data] += 1
    c.walk_refs_by_level = walk_lv
    c.data_refs_by_level = data_lv
    whole = cost(c, cpu)
    assert total == whole.translation_cycles + whole.data_cycles


def test_unknown_source_is_refused() -> None:
    with pytest.raises(ValueError, match="'L2'"):
        access_cycles(skylake(), "L2")
