"""The data-cache model the access-trace engine charges walks and data against (issue 12).

A small stack of set-associative, LRU caches of 64-byte lines (L1D, L2, LLC: the
``CacheGeometry`` tuple of a ``CpuModel``), physically indexed. Page-walk references and the
trace's data references go through the *same* caches, so page-table lines compete with data
lines: a walk is cheap while its PTE line stays in L1D/L2 and expensive once data evicted it.

Policy (one rule, the same in both twins):

* a line is looked up in L1D, then L2, then LLC; the first level holding it answers
  (``0``, ``1``, ``2``), or memory (``3``: DRAM);
* the line becomes the most recently used of its set at the level that answered and is filled,
  as most recently used, into every level above it (a miss everywhere fills all three);
* a fill into a full set evicts that set's least recently used line; nothing else happens to
  the victim (no back-invalidation of upper levels: the stack is neither inclusive nor
  exclusive, like a modern non-inclusive L2/LLC), and writes cost what reads cost (no
  write-back traffic is modelled).

Set index = line number mod number of sets (a cache whose set count is not a power of two,
like an 11-way LLC slice, is fine). Instruction fetches are not cached here (there is no L1I
model): only data references and walk references are.

Two twins: :class:`CacheModel` (plain Python, per-set ``dict`` in LRU order: the reference
engine's) and the array form of :func:`cache_arrays` driven by the numba function
:func:`cache_access` (the fast engine's). Tests run both on the same line streams.

The compiled twin lives in ``vmsim.memtrace._core`` beside the engine loop that inlines it:
numba's on-disk cache (``cache=True``) is keyed by the source file of the function compiled,
so a compiled function inlined from another file would keep running stale code after an edit
of that file alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from vmsim.memtrace._core import D_LEN, DRAM, LINE_SHIFT, cache_access, cache_run
from vmsim.memtrace.records import CacheGeometry

__all__ = [
    "LINE_SHIFT",
    "CacheArrays",
    "CacheModel",
    "aligned_full",
    "cache_access",
    "cache_arrays",
    "cache_lines",
    "cache_run",
]


def _check(geoms: Sequence[CacheGeometry]) -> None:
    if len(geoms) != 3:
        raise ValueError(f"the cache model has three levels (L1D, L2, LLC), not {len(geoms)}")
    for g in geoms:
        if g.line != 1 << LINE_SHIFT:
            raise ValueError(f"cache lines are 64 bytes, not {g.line}")
        if g.ways <= 0 or g.size <= 0 or g.size % (g.ways * g.line):
            raise ValueError(f"{g.size} bytes do not divide into {g.ways} ways of 64 bytes")


class CacheModel:
    """The plain-Python twin: ``access(paddr)`` returns where the line was found (0 L1D,
    1 L2, 2 LLC, 3 DRAM) and updates the LRU state as the module docstring says."""

    def __init__(self, geoms: Sequence[CacheGeometry]) -> None:
        _check(geoms)
        self.geoms = tuple(geoms)
        self.sets: list[list[dict[int, None]]] = [[{} for _ in range(g.sets)] for g in geoms]
        self.ways = [g.ways for g in geoms]
        self.nsets = [g.sets for g in geoms]

    def access(self, paddr: int) -> int:
        line = paddr >> LINE_SHIFT
        found = DRAM
        for lv in range(3):
            s = self.sets[lv][line % self.nsets[lv]]
            if line in s:
                del s[line]
                s[line] = None
                found = lv
                break
        for lv in range(found):
            s = self.sets[lv][line % self.nsets[lv]]
            if len(s) >= self.ways[lv]:
                del s[next(iter(s))]
            s[line] = None
        return found

    def contents(self) -> list[list[list[int]]]:
        """Lines per level and set, least recently used first (for tests)."""
        return [[list(s) for s in level] for level in self.sets]


CacheArrays = tuple[npt.NDArray[np.int64] | npt.NDArray[np.int32], npt.NDArray[np.int64]]

TAG32_MAX = (1 << 31) - 1  # the largest tag an int32 set holds (-1 is the empty mark)


def cache_arrays(geoms: Sequence[CacheGeometry], max_paddr: int | None = None) -> CacheArrays:
    """The fast twin's state: ``(tags, desc)``. Each set is ``ways`` consecutive slots of
    ``tags`` in recency order, most recent first, empty slots (-1) last: the LRU line is the
    last slot, and a probe or a move to the front is a fixed, branch-free pass over the set.
    ``desc[lv]`` (columns ``_core.D_*``) = (first slot, sets, ways, sets - 1 if sets is a
    power of two else -1, tag shift, tag divisor) for lv 0..2.

    With ``max_paddr`` (the physical addresses the caller will pass are all below it: the
    model's RAM size), a set stores each line's tag, ``line // sets`` (the set index is the
    remainder: nothing is lost), as int32 when every level's largest tag fits: an 8 MiB LLC
    of 16 ways then has 512 KiB of tags, and a set of 16 is one 64-byte host line. Otherwise
    (no bound, or a tag past 2**31 - 1) a set stores whole line numbers as int64."""
    _check(geoms)
    narrow = max_paddr is not None and all(
        ((max_paddr - 1) >> LINE_SHIFT) // g.sets <= TAG32_MAX for g in geoms
    )
    desc = np.zeros((3, D_LEN), dtype=np.int64)
    base = 0
    for lv, g in enumerate(geoms):
        pow2 = g.sets & (g.sets - 1) == 0
        shift = g.sets.bit_length() - 1 if narrow and pow2 else 0
        desc[lv] = (
            base,
            g.sets,
            g.ways,
            g.sets - 1 if pow2 else -1,
            shift,
            g.sets if narrow else 1,
        )
        base += g.sets * g.ways
    return aligned_full(base, -1, np.int32 if narrow else np.int64), desc


def cache_lines(
    tags: npt.NDArray[np.int64] | npt.NDArray[np.int32], desc: npt.NDArray[np.int64]
) -> list[list[list[int]]]:
    """The line numbers the fast twin holds, per level and set, most recent first (empty
    slots left out): each tag back to its line (``tag * sets + set index``)."""
    out = []
    for lv in range(3):
        base, sets, ways, _mask, _shift, div = (int(x) for x in desc[lv])
        rows = tags[base : base + sets * ways].reshape(sets, ways).tolist()
        out.append(
            [[t * div + i if div > 1 else t for t in row if t >= 0] for i, row in enumerate(rows)]
        )
    return out


def aligned_full(
    n: int, fill: int, dtype: type[np.int64] | type[np.int32] = np.int64
) -> npt.NDArray[Any]:
    """``np.full(n, fill, dtype)`` starting on a 64-byte boundary: a set of 8 int64 slots (or
    16 int32) is then one host cache line, one of 4 half of one. The vector probes
    (``_core._find``) load a whole set at once; a set straddling two host lines made the
    iTLB probe 1.5x slower."""
    size = np.dtype(dtype).itemsize
    buf = np.full(n + 64 // size, fill, dtype=dtype)
    skip = (-buf.ctypes.data % 64) // size
    return buf[skip : skip + n]
