"""The shapes every part of the access-trace engine agrees on (issue 12).

A memory-access trace (Valgrind lackey, Intel Pin's pinatrace, ChampSim, vmsim's own ``.npz``)
is read in chunks of parallel numpy arrays, never whole: :class:`TraceChunk`. The readers
(``vmsim.memtrace.readers``) produce chunks; the engines (``vmsim.memtrace.engine`` compiled,
``vmsim.memtrace.reference`` the Python model) consume them and fill :class:`Counters`; the
cost model (``vmsim.memtrace.cost``) turns counters into cycles with a :class:`CpuModel`.

Record kinds follow lackey: ``I`` instruction fetch, ``L`` load, ``S`` store, ``M`` modify
(a load and a store of the same bytes: one translation, as the hardware does it, that sets
the dirty bit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = [
    "KIND_INSTR",
    "KIND_LOAD",
    "KIND_MODIFY",
    "KIND_NAMES",
    "KIND_STORE",
    "CacheGeometry",
    "Counters",
    "CpuModel",
    "TraceChunk",
    "TraceError",
]

KIND_INSTR = 0  # lackey "I": an instruction fetch (iTLB)
KIND_LOAD = 1  # " L": a data read (dTLB)
KIND_STORE = 2  # " S": a data write (dTLB, sets A and D)
KIND_MODIFY = 3  # " M": read-modify-write of the same bytes: one translation, a write
KIND_NAMES = ("I", "L", "S", "M")


class TraceChunk(NamedTuple):
    """Consecutive records of a trace, as parallel arrays of equal length.

    ``addr`` (uint64) is the virtual address of the first byte, ``kind`` (uint8) one of the
    ``KIND_*`` values, ``size`` (uint16) the byte count (0 where the format has none).
    ``first_line`` is the 1-based input line (text formats) or record index (binary formats)
    of ``addr[0]``; a record's own line may be later where the input has lines that are not
    records (lackey's ``==PID==`` header): readers keep ``lines`` (int64, the line of each
    record) only when asked, for error reports and plots over the trace."""

    addr: npt.NDArray[np.uint64]
    kind: npt.NDArray[np.uint8]
    size: npt.NDArray[np.uint16]
    first_line: int


class TraceError(ValueError):
    """Input that is not a trace of the format read: names the file, the line (text) or byte
    offset (binary) and the problem. ``str()`` is the one-line message the CLI prints."""

    def __init__(
        self, path: str, problem: str, *, line: int | None = None, offset: int | None = None
    ) -> None:
        where = (
            f":{line}" if line is not None else f" at byte {offset}" if offset is not None else ""
        )
        super().__init__(f"{path}{where}: {problem}")
        self.path = path
        self.problem = problem
        self.line = line
        self.offset = offset


@dataclass(frozen=True)
class CacheGeometry:
    """One set-associative, LRU cache of 64-byte lines (L1D, L2 or LLC)."""

    size: int  # bytes
    ways: int
    latency: int  # load-to-use cycles of a hit at this level
    line: int = 64

    @property
    def sets(self) -> int:
        return self.size // (self.ways * self.line)


@dataclass
class Counters:
    """What one engine pass over a trace counts. Both engines fill every field the same way
    (tests compare them field by field). ``walk_refs_by_level`` and ``data_refs_by_level``
    count where each reference was found: ``[L1D, L2, LLC, DRAM]``."""

    records: int = 0  # trace records read
    instructions: int = 0  # "I" records
    accesses: int = 0  # translations: data + instruction references
    l1_hits: int = 0  # L1 iTLB/dTLB hits
    stlb_hits: int = 0  # L1 misses that hit the STLB
    walks: int = 0  # STLB misses: page walks started
    walk_refs: int = 0  # paging-structure entries read from memory by walks
    pwc_hits: int = 0  # walks that started below the root thanks to the PWC
    faults: int = 0  # page faults handed to the model (demand paging, COW, ...)
    tlb_flushes: int = 0  # flushes the model caused (munmap, mprotect, COW break, ...)
    walk_refs_by_level: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    data_refs_by_level: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    touched_pages: int = 0  # distinct 4 KiB pages referenced
    by_page_size: dict[str, int] = field(default_factory=dict)  # translations per "4K"/"2M"/"1G"


@dataclass(frozen=True)
class CpuModel:
    """A core's translation hardware and the latencies the cycle model charges.
    ``tlb`` is a ``vmsim.hw.tlb.TlbConfig``; presets live in ``vmsim.memtrace.cpus``."""

    name: str
    tlb: object  # vmsim.hw.tlb.TlbConfig (kept untyped here so records imports no hw)
    pwc_sizes: tuple[tuple[int, int], ...]  # (level, entries): 2=PDE, 3=PDPTE, 4=PML4E, 5
    caches: tuple[CacheGeometry, ...]  # L1D, L2, LLC
    dram_latency: int  # cycles
    stlb_hit_latency: int  # extra cycles of an L1 TLB miss that hits the STLB
    walk_overhead: int  # fixed cycles a walk costs beyond its memory references
    base_cpi: float  # cycles per instruction of everything that is not a memory access
    source: str  # where the figures come from (paper, manual, measurement)
