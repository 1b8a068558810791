"""Passes of the access-trace engine read as they go (a whole pass is
:func:`vmsim.memtrace.engine.run`): after every chunk (:func:`translate_steps`) or every
window of records (:func:`translate_windows`), and the two layouts that need no file (a region, or inferred from
the trace). ``vmsim tlb``, ``vmsim demo tlb`` and the tour call these; the files a user names
(maps snapshots, strace logs) are read by :mod:`vmsim.cli.tlb`, which owns their errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from vmsim.memtrace.engine import EngineConfig, FastEngine, Model
from vmsim.memtrace.layout import Layout
from vmsim.memtrace.records import Counters, CpuModel, TraceChunk
from vmsim.memtrace.report import Window


def translate_steps(
    chunks: Iterable[TraceChunk],
    cpu: CpuModel,
    *,
    layout: Layout,
    page_size: str,
    five_level: bool = False,
    pwc: bool = True,
) -> list[Counters]:
    """One pass of the fast engine over ``chunks``, reading its counters after each chunk:
    the counters of each chunk (the difference of two readings; the engine's state carries
    over from one chunk to the next, as in one :func:`vmsim.memtrace.engine.run` pass)."""
    return [counters for _, counters in _steps(chunks, cpu, layout, page_size, five_level, pwc)]


def _steps(
    chunks: Iterable[TraceChunk],
    cpu: CpuModel,
    layout: Layout,
    page_size: str,
    five_level: bool,
    pwc: bool,
) -> Iterator[tuple[TraceChunk, Counters]]:
    cfg = EngineConfig.of(cpu, page_size=page_size, five_level=five_level, pwc=pwc)
    eng = FastEngine(Model(layout, cfg))
    before = Counters()
    for chunk in chunks:
        eng.run_chunk(chunk)
        after = eng.counters()
        yield chunk, _minus(after, before)
        before = after
    eng.finish()


def _slices(chunks: Iterable[TraceChunk], window: int) -> Iterator[TraceChunk]:
    for chunk in chunks:
        for lo in range(0, len(chunk.addr), window):
            hi = lo + window
            yield TraceChunk(
                chunk.addr[lo:hi], chunk.kind[lo:hi], chunk.size[lo:hi], chunk.first_line + lo
            )


def translate_windows(
    chunks: Iterable[TraceChunk],
    cpu: CpuModel,
    *,
    layout: Layout,
    page_size: str,
    five_level: bool,
    pwc: bool,
    window: int,
) -> list[Window]:
    """The counters of every ``window`` consecutive records of one engine pass (streamed),
    each with the window's working set (distinct 4 KiB pages it touches)."""
    windows = []
    first = 0
    for part, counters in _steps(_slices(chunks, window), cpu, layout, page_size, five_level, pwc):
        pages = len(np.unique(part.addr >> np.uint64(12)))
        windows.append(Window(first, counters, pages << 12))
        first += len(part.addr)
    return windows


def _minus(a: Counters, b: Counters) -> Counters:
    return Counters(
        records=a.records - b.records,
        instructions=a.instructions - b.instructions,
        accesses=a.accesses - b.accesses,
        l1_hits=a.l1_hits - b.l1_hits,
        stlb_hits=a.stlb_hits - b.stlb_hits,
        walks=a.walks - b.walks,
        walk_refs=a.walk_refs - b.walk_refs,
        pwc_hits=a.pwc_hits - b.pwc_hits,
        faults=a.faults - b.faults,
        tlb_flushes=a.tlb_flushes - b.tlb_flushes,
        walk_refs_by_level=[
            x - y for x, y in zip(a.walk_refs_by_level, b.walk_refs_by_level, strict=True)
        ],
        data_refs_by_level=[
            x - y for x, y in zip(a.data_refs_by_level, b.data_refs_by_level, strict=True)
        ],
        touched_pages=a.touched_pages - b.touched_pages,
    )


def region_layout(start: int, end: int) -> Layout:
    """One private anonymous region ``[start, end)`` (generated traces)."""
    return Layout.of_regions([(start, end)])


def inferred_layout(chunks: Iterable[TraceChunk]) -> Layout:
    """Each touched region mapped as private anonymous memory (the report says so)."""
    return Layout.infer(chunks)
