"""The access-trace engine: TLB hit rates, page-walk cost and huge-page what-ifs from memory
traces of real programs (Valgrind lackey, Pin, ChampSim, vmsim ``.npz``)."""

from vmsim.memtrace.records import (
    KIND_INSTR,
    KIND_LOAD,
    KIND_MODIFY,
    KIND_STORE,
    CacheGeometry,
    Counters,
    CpuModel,
    TraceChunk,
    TraceError,
)

__all__ = [
    "KIND_INSTR",
    "KIND_LOAD",
    "KIND_MODIFY",
    "KIND_STORE",
    "CacheGeometry",
    "Counters",
    "CpuModel",
    "TraceChunk",
    "TraceError",
]
