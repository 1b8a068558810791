"""The TLB regimes as a working set grows (``vmsim demo tlb`` and the tour's translation
chapter): generated traces of uniformly random loads over a working set, run through the
access-trace engine with 4 KiB and 2 MiB pages, returned as plain data (:class:`Point`).

Each point: a warm-up that stores once to every page (its faults and cold walks are not
counted: the figures are the steady state), then ``ACCESSES`` 8-byte loads at uniformly
random 64-byte lines, priced by the cycle model with one instruction per load.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from vmsim.memtrace.cpus import Reach
from vmsim.memtrace.passes import region_layout, translate_steps
from vmsim.memtrace.records import KIND_LOAD, KIND_STORE, CpuModel, TraceChunk
from vmsim.memtrace.report import PassResult

ACCESSES = 200_000
BASE = 0x7F00_0000_0000  # 1 GiB aligned: the working set starts a PDPTE's range
SEED = 12


def working_set_trace(size: int, accesses: int = ACCESSES, seed: int = SEED) -> TraceChunk:
    """``accesses`` loads of 8 bytes at uniformly random 64-byte lines of ``size`` bytes."""
    rng = np.random.default_rng(seed)
    lines = rng.integers(0, size // 64, accesses, dtype=np.uint64)
    return _records(np.uint64(BASE) + lines * np.uint64(64))


def warm_up_trace(size: int) -> TraceChunk:
    """One store per 4 KiB page of the working set, in address order: every first-touch fault
    and cold walk happens here, before the measured loads. Stores, not loads: a read of
    never-written anonymous memory maps the shared zero page (do_anonymous_page()), and every
    load would then hit the same physical lines in the data caches."""
    return _records(np.uint64(BASE) + np.arange(0, size, 4096, dtype=np.uint64), KIND_STORE)


def _records(addr: npt.NDArray[np.uint64], kind: int = KIND_LOAD) -> TraceChunk:
    n = len(addr)
    return TraceChunk(addr, np.full(n, kind, dtype=np.uint8), np.full(n, 8, dtype=np.uint16), 1)


@dataclass(frozen=True)
class Point:
    size: int
    small: PassResult  # 4 KiB pages
    huge: PassResult  # 2 MiB pages


def measure(size: int, cpu: CpuModel, accesses: int = ACCESSES) -> Point:
    """Both page sizes at one working-set size, through the engine: the warm-up, then the
    measured random loads; the point's counters are those of the random loads alone."""
    chunks = [warm_up_trace(size), working_set_trace(size, accesses)]
    passes = []
    for page_size in ("4K", "2M"):
        _, counters = translate_steps(
            chunks, cpu, layout=region_layout(BASE, BASE + size), page_size=page_size
        )
        counters = replace(counters, instructions=accesses)  # one instruction per load
        passes.append(PassResult.of(counters, cpu, page_size=page_size))
    return Point(size, passes[0], passes[1])


def regime(size: int, r: Reach) -> str:
    if size <= r.l1_4k:
        return "1 L1"
    if size <= r.stlb_4k:
        return "2 STLB"
    if size <= r.pwc:
        return "3 walk"
    return "3 walk+PDE"
